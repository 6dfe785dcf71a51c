"""Faster R-CNN in miniature (Ren et al., 2015): a two-stage object detector, with torchvision's
training conventions (its `FasterRCNN`, single feature level, no FPN).

x (B, C, H, W) -> features (B, D, H/s, W/s), s = 2^len(widths), from a small conv backbone.

Stage 1, the region proposal network (RPN). A 3x3 conv + ReLU, then for each feature cell and
each of its A anchors (ops/boxes.anchors: sizes x ratios, centred on the cell) an objectness
logit o and deltas t (encode_boxes, unit weights) to a box.
  Training: match_boxes with IoU thresholds (0.3, 0.7) and each ground truth's best anchors;
  sample `rpn_batch` anchors per image, at most half positive; loss
      L_rpn = mean_sampled BCE(o, positive) + sum_positive smoothL1_beta(t - t*) / n_sampled.
  Proposals (no gradient): decode, clip, the pre_nms best by o per image, drop boxes under
  1e-3 px, NMS at 0.7 within each image, the post_nms best.
Stage 2, the box head. RoI Align (aligned, roi_size^2 bins, 2 x 2 samples) of each proposal,
two fully connected layers of head_width, then K + 1 class logits (class 0 the background)
and class-specific deltas (weights (10, 10, 5, 5)).
  Training: the proposals plus the ground-truth boxes, matched at IoU 0.5 (below: background);
  sample `roi_batch` per image, at most 25% foreground; loss
      L_head = mean_sampled CE(logits, class) + sum_foreground smoothL1_beta(t_class - t*) / n_sampled.
  Inference: softmax scores, each class's box decoded and clipped, scores > 0.05, NMS at 0.5
  within each (image, class), the `max_detections` best per image.
L = L_rpn + L_head, beta = 1/9 (torchvision's). The RPN's convs start N(0, 0.01) (torchvision's
RPNHead), the box head's classifier N(0, 0.01) and regressor N(0, 0.001), all biases 0
(Detectron2's FastRCNNOutputLayers and py-faster-rcnn; torchvision keeps nn.Linear's default there).

With `masks` on, Mask R-CNN (He et al., 2017): a mask head beside the box head. RoI Align
(aligned, mask_roi_size^2 bins, 2 x 2 samples) of a box on the outputs of the backbone stages
`mask_stages` (stage i at stride 2^(i+1)), concatenated along channels; `mask_convs` 3x3 conv +
ReLU layers of mask_width, a 2x2 stride-2 transposed conv + ReLU, a 1x1 conv to K mask logits of
side M = 2 mask_roi_size, one per class. The paper's heads read one map (C4 at stride 16, or the
FPN level of the box's size, the finest for small objects); reading the stride-2 stage beside the
last one is a hypercolumn (Hariharan et al., 2015): a 16-px digit spans 4 cells at stride 4,
too few for its 2-px strokes.
  Training: on the head's foreground candidates only; the target of candidate r matched to ground
  truth g is RoI Align (aligned) of g's instance mask over r's box, >= 0.5 (Detectron2's); loss
      L_mask = mean over those candidates and M^2 pixels of BCE(mask logit of g's class, target),
  the other classes' masks untouched (no competition between classes).
  Inference: on the final detections' boxes, the detected class's mask, sigmoid, pasted into the
  image (ops/boxes.paste_masks) and thresholded at 0.5: "masks" (D, H, W) bool.
L = L_rpn + L_head + L_mask. Instance masks come from the batch's "instances" map (data/scenes.py:
pixel value g + 1 where ground truth g is the visible digit).

Batches are padded (data/scenes.py): boxes (B, M, 4), labels (B, M) with -1 for no box; the
target matching and sampling run on the whole padded batch at once.
Detections are dicts {"boxes" (D, 4), "scores" (D,), "labels" (D,) in [0, num_classes)}, the
layout metrics/detection.average_precision reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepzoo.config import Count, Probability, Sizes, added_later
from deepzoo.models.segmentation import conv_bn_relu
from deepzoo.nn.precision import upcast
from deepzoo.ops.boxes import (
    BACKGROUND,
    anchors,
    batched_nms,
    box_iou,
    clip_boxes,
    crop_and_resize,
    decode_boxes,
    encode_boxes,
    match_boxes,
    paste_masks,
    roi_align,
)

HEAD_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
"""Box-coder weights of the second stage (torchvision's and Detectron2's)."""
SMOOTH_L1_BETA = 1.0 / 9


@dataclass(frozen=True)
class DetectorConfig:
    in_channels: Count = 1
    """Image channels."""
    num_classes: Count = 10
    """Object classes (the box head adds the background)."""
    widths: Sizes = (32, 64)
    """Backbone stages, each two 3x3 conv-BN-ReLU: the first conv has stride 2 and a 2x2 max-pool
    precedes each later stage, so the feature stride is 2^len(widths)."""
    anchor_sizes: tuple[float, ...] = (10.0, 16.0, 24.0)
    """Anchor sides (square root of the area), in pixels."""
    anchor_ratios: tuple[float, ...] = (1.0, 2.0, 3.0)
    """Anchor height / width (digits are taller than wide)."""
    rpn_fg_iou: float = 0.7
    """An anchor with IoU >= this with a ground truth is positive (as are each one's best anchors)."""
    rpn_bg_iou: float = 0.3
    """An anchor with IoU < this with every ground truth is negative; between: ignored."""
    rpn_batch: Count = 256
    """Anchors sampled per image for the RPN loss, at most half positive."""
    pre_nms_train: Count = 600
    pre_nms_test: Count = 300
    post_nms_train: Count = 128
    post_nms_test: Count = 64
    """Proposals per image before and after the RPN's NMS, in training and inference."""
    rpn_nms: Probability = 0.7
    """IoU above which the RPN's NMS drops the lower-scored proposal."""
    roi_size: Count = 7
    """RoI Align output side."""
    head_width: Count = 256
    """Width of the box head's two fully connected layers."""
    roi_iou: Probability = 0.5
    """A proposal with IoU >= roi_iou with a ground truth learns its class, else the background."""
    roi_batch: Count = 128
    """Candidate boxes sampled per image for the head's loss."""
    roi_positive_fraction: Probability = 0.25
    """Largest share of foreground candidates in that sample."""
    score_threshold: Probability = 0.05
    """Detections scoring at most this are dropped."""
    nms: Probability = 0.5
    """IoU above which NMS (per image and class) drops the lower-scored detection."""
    max_detections: Count = 100
    """Detections kept per image, best first."""
    masks: bool = False
    """Mask R-CNN: predict an instance mask for each detection (a mask head beside the box head)."""
    mask_roi_size: Count = 14
    """RoI Align output side of the mask head; its masks are twice as wide."""
    mask_width: Count = 32
    """Channels of the mask head's convolutions."""
    mask_convs: Count = 2
    """3x3 convolutions of the mask head before its upsampling (the paper's: 4 of 256)."""
    mask_stages: tuple[int, ...] = added_later((0, -1), absent=(-1,))
    """Backbone stages whose outputs the mask head reads, concatenated: 0 the first (stride 2), -1
    the last (the box head's map); (-1,) reads the last one only, as the paper's C4 head does (and
    as a run saved before this field existed does)."""

    def __post_init__(self) -> None:
        if not 0 < self.rpn_bg_iou <= self.rpn_fg_iou <= 1:
            raise ValueError(
                f"need 0 < rpn_bg_iou <= rpn_fg_iou <= 1, got {self.rpn_bg_iou}, {self.rpn_fg_iou}"
            )
        if not self.widths or not self.anchor_sizes or not self.anchor_ratios:
            raise ValueError("widths, anchor_sizes and anchor_ratios must be non-empty")
        n = len(self.widths)
        if not self.mask_stages or not all(-n <= i < n for i in self.mask_stages):
            raise ValueError(f"mask_stages must be stage indices in [-{n}, {n}), got {self.mask_stages}")
        if len(set(self.mask_head_stages)) < len(self.mask_stages):
            raise ValueError(f"mask_stages names a stage twice: {self.mask_stages}")

    @property
    def mask_head_stages(self) -> list[int]:
        """`mask_stages` as increasing indices in [0, len(widths))."""
        return sorted(i % len(self.widths) for i in self.mask_stages)


def sample_balanced(
    positive: Tensor, negative: Tensor, per_image: int, fraction: float
) -> tuple[Tensor, Tensor]:
    """Faster R-CNN's minibatch of each row of (B, N) masks: uniformly without replacement,
    min(#positive, floor(per_image fraction)) positives, and negatives to fill `per_image` (as many
    as there are). Returns the (B, N) masks of the chosen positives and negatives."""
    n_pos = positive.sum(1).clamp(max=int(per_image * fraction))
    n_neg = torch.minimum(negative.sum(1), per_image - n_pos)

    def choose(mask: Tensor, n: Tensor) -> Tensor:
        keys = torch.rand(mask.shape, device=mask.device).masked_fill(~mask, -1.0)
        rank = keys.argsort(1, descending=True).argsort(1)
        return mask & (rank < n[:, None])

    return choose(positive, n_pos), choose(negative, n_neg)


def _top_per_image(image: Tensor, count: int, batch: int) -> tuple[Tensor, Tensor]:
    """Indices sorted by decreasing score with their image ids -> (which to keep, rank within
    the image): the first `count` of each image."""
    order = torch.sort(image, stable=True).indices
    counts = torch.bincount(image, minlength=batch)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=image.device) - starts[image[order]]
    return rank < count, rank


class FasterRCNN(nn.Module):
    def __init__(self, config: DetectorConfig = DetectorConfig()) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        c = config.in_channels
        self.stage_ends: list[int] = []
        """The index in `backbone` after each stage's last layer."""
        for i, w in enumerate(config.widths):
            if i:
                layers.append(nn.MaxPool2d(2))
            layers += [conv_bn_relu(c, w, stride=2 if i == 0 else 1), conv_bn_relu(w, w)]
            self.stage_ends.append(len(layers))
            c = w
        self.backbone = nn.Sequential(*layers)
        self.stride = 2 ** len(config.widths)
        A = len(config.anchor_sizes) * len(config.anchor_ratios)
        self.rpn_conv = nn.Conv2d(c, c, 3, padding=1)
        self.rpn_objectness = nn.Conv2d(c, A, 1)
        self.rpn_deltas = nn.Conv2d(c, 4 * A, 1)
        K, hw = config.num_classes, config.head_width
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(c * config.roi_size**2, hw), nn.ReLU(), nn.Linear(hw, hw), nn.ReLU()
        )
        self.classify = nn.Linear(hw, K + 1)
        self.regress = nn.Linear(hw, 4 * (K + 1))
        if config.masks:
            mw, convs = config.mask_width, []
            c_in = sum(config.widths[i] for i in config.mask_head_stages)
            for i in range(config.mask_convs):
                convs += [nn.Conv2d(c_in if i == 0 else mw, mw, 3, padding=1), nn.ReLU()]
            self.mask_head = nn.Sequential(
                *convs,
                nn.ConvTranspose2d(mw if convs else c_in, mw, 2, stride=2),
                nn.ReLU(),
                nn.Conv2d(mw, K, 1),
            )
        for layer, std in [(self.rpn_conv, 0.01), (self.rpn_objectness, 0.01), (self.rpn_deltas, 0.01),
                           (self.classify, 0.01), (self.regress, 0.001)]:  # fmt: skip
            nn.init.normal_(layer.weight, std=std)
            nn.init.zeros_(layer.bias)

    # ---- stage 1
    def anchors_for(self, features: Tensor) -> Tensor:
        """(h w A, 4) anchors of a feature map, cell-major."""
        h, w = features.shape[-2:]
        c = self.config
        return anchors((h, w), self.stride, c.anchor_sizes, c.anchor_ratios).to(features.device)

    def rpn(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """features (B, D, h, w) -> objectness (B, h w A) and deltas (B, h w A, 4), anchor order."""
        t = F.relu(self.rpn_conv(features))
        B, _, h, w = t.shape
        objectness = self.rpn_objectness(t).permute(0, 2, 3, 1).reshape(B, -1)
        deltas = self.rpn_deltas(t).reshape(B, -1, 4, h, w).permute(0, 3, 4, 1, 2).reshape(B, -1, 4)
        return objectness, deltas

    def proposals(
        self, objectness: Tensor, deltas: Tensor, anchor_boxes: Tensor, size: tuple[int, int]
    ) -> tuple[Tensor, Tensor]:
        """-> (B, P, 4) proposals, best first, and a (B, P) mask of the real ones (P = post_nms)."""
        c = self.config
        pre, post = (
            (c.pre_nms_train, c.post_nms_train) if self.training else (c.pre_nms_test, c.post_nms_test)
        )
        B = len(objectness)
        scores, top = objectness.detach().topk(min(pre, objectness.shape[1]), dim=1)
        boxes = decode_boxes(
            anchor_boxes[top], torch.gather(deltas.detach(), 1, top[..., None].expand(-1, -1, 4))
        )
        boxes = clip_boxes(boxes, *size).flatten(0, 1)
        image = torch.arange(B, device=boxes.device).repeat_interleave(top.shape[1])
        scores = scores.flatten()
        big = ((boxes[:, 2] - boxes[:, 0]) >= 1e-3) & ((boxes[:, 3] - boxes[:, 1]) >= 1e-3)
        boxes, scores, image = boxes[big], scores[big], image[big]
        kept = batched_nms(boxes, scores, image, c.rpn_nms)
        first, rank = _top_per_image(image[kept], post, B)
        out, valid = boxes.new_zeros(B, post, 4), torch.zeros(B, post, dtype=torch.bool, device=boxes.device)
        out[image[kept][first], rank[first]] = boxes[kept][first]
        valid[image[kept][first], rank[first]] = True
        return out, valid

    # ---- stage 2
    def box_head(self, features: Tensor, image: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
        """RoIs (image index (R,), boxes (R, 4)) -> class logits (R, K + 1), deltas (R, K + 1, 4)."""
        rois = torch.cat([image[:, None].to(boxes), boxes], 1)
        s = self.config.roi_size
        pooled = roi_align(features, rois, (s, s), 1.0 / self.stride, sampling_ratio=2, aligned=True)
        h = self.head(pooled)
        return self.classify(h), self.regress(h).reshape(len(h), -1, 4)

    def mask_logits(self, stages: list[Tensor], image: Tensor, boxes: Tensor) -> Tensor:
        """The backbone's stage outputs (`stages`), boxes (image index (R,), boxes (R, 4)) -> mask
        logits (R, K, M, M) of each class."""
        rois = torch.cat([image[:, None].to(boxes), boxes], 1)
        s = self.config.mask_roi_size
        pooled = [
            roi_align(stages[i], rois, (s, s), 0.5 ** (i + 1), sampling_ratio=2, aligned=True)
            for i in self.config.mask_head_stages
        ]
        return self.mask_head(torch.cat(pooled, 1))

    def mask_targets(self, instances: Tensor, image: Tensor, matched: Tensor, boxes: Tensor) -> Tensor:
        """The mask of ground truth `matched` (R,) of image `image` (R,) (instances (B, H, W): g + 1
        where g is seen) cut to `boxes` (R, 4) on the head's M x M grid: (R, M, M) float 0/1."""
        masks = (instances[image] == (matched + 1)[:, None, None].to(instances.dtype)).float()
        with torch.autocast(boxes.device.type, enabled=False):  # data, not the network: full precision
            cut = crop_and_resize(masks, boxes.float(), 2 * self.config.mask_roi_size)
        return (cut >= 0.5).to(boxes.dtype)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> backbone features (B, D, H / stride, W / stride)."""
        return self.backbone(x)

    def stages(self, x: Tensor) -> list[Tensor]:
        """(B, C, H, W) -> each backbone stage's output, stage i (B, widths[i], H / 2^(i+1), W / 2^(i+1));
        the last one is `forward`'s."""
        out, start = [], 0
        for end in self.stage_ends:
            x = self.backbone[start:end](x)
            out.append(x)
            start = end
        return out

    def rpn_loss(
        self, objectness: Tensor, deltas: Tensor, anchor_boxes: Tensor, gt_boxes: Tensor, gt_valid: Tensor
    ) -> tuple[Tensor, Tensor]:
        """(L_cls, L_box) of the RPN outputs (B, N), (B, N, 4) for anchors (N, 4) against the padded
        ground truths (B, M, 4), gt_valid (B, M); see the module docstring."""
        c = self.config
        iou = box_iou(gt_boxes, anchor_boxes).masked_fill(~gt_valid[..., None], -1.0)
        matches = match_boxes(iou, c.rpn_fg_iou, c.rpn_bg_iou, low_quality=True)
        pos, neg = sample_balanced(matches >= 0, matches == BACKGROUND, c.rpn_batch, 0.5)
        sampled = pos | neg
        logits = upcast(objectness[sampled])
        cls = F.binary_cross_entropy_with_logits(logits, pos[sampled].to(logits.dtype))
        b, a = torch.nonzero(pos, as_tuple=True)
        target = encode_boxes(anchor_boxes[a], gt_boxes[b, matches[b, a]])
        box = F.smooth_l1_loss(upcast(deltas[b, a]), target, beta=SMOOTH_L1_BETA, reduction="sum")
        return cls, box / sampled.sum()

    def roi_targets(
        self, rois: Tensor, roi_valid: Tensor, gt_boxes: Tensor, gt_labels: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """The head's training minibatch of candidate boxes rois (B, R, 4) (mask roi_valid (B, R)):
        -> (image index (S,), roi index (S,), class (S,) with 0 the background, deltas (S, 4) to the
        matched ground truth, encoded with HEAD_WEIGHTS, zero rows for the background; the matched
        ground truth's index (S,), 0 for the background)."""
        c = self.config
        gt_valid = gt_labels >= 0
        iou = box_iou(gt_boxes, rois).masked_fill(~gt_valid[..., None], -1.0)
        matches = match_boxes(iou, c.roi_iou, c.roi_iou)
        pos, neg = sample_balanced(
            roi_valid & (matches >= 0),
            roi_valid & (matches == BACKGROUND),
            c.roi_batch,
            c.roi_positive_fraction,
        )
        b, r = torch.nonzero(pos | neg, as_tuple=True)
        matched = matches[b, r].clamp_min(0)
        classes = torch.where(pos[b, r], gt_labels[b, matched] + 1, 0)
        target = encode_boxes(rois[b, r], gt_boxes[b, matched], HEAD_WEIGHTS) * (classes > 0)[:, None]
        return b, r, classes, target, matched

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """L = L_rpn + L_head (+ L_mask with `masks`) on a padded batch {"x", "boxes" (B, M, 4),
        "labels" (B, M)} (and "instances" (B, H, W) for the masks)."""
        x, gt_boxes, gt_labels = batch["x"], upcast(batch["boxes"]), batch["labels"].long()
        gt_valid = gt_labels >= 0
        stages = self.stages(x)
        features = stages[-1]
        anchor_boxes = self.anchors_for(features)
        objectness, deltas = self.rpn(features)
        rpn_cls, rpn_box = self.rpn_loss(objectness, deltas, anchor_boxes, gt_boxes, gt_valid)
        # the head learns from the proposals and from the ground truths themselves
        proposals, valid = self.proposals(objectness, deltas, anchor_boxes, tuple(x.shape[-2:]))
        rois = torch.cat([proposals, gt_boxes], 1)
        b, r, classes, target, matched = self.roi_targets(
            rois, torch.cat([valid, gt_valid], 1), gt_boxes, gt_labels
        )
        logits, head_deltas = self.box_head(features, b, rois[b, r])
        cls = F.cross_entropy(upcast(logits), classes)
        fg = torch.nonzero(classes > 0).squeeze(1)
        box = F.smooth_l1_loss(
            upcast(head_deltas[fg, classes[fg]]), target[fg], beta=SMOOTH_L1_BETA, reduction="sum"
        ) / len(classes)
        accuracy = (logits.argmax(1) == classes).float().mean()
        terms = {
            "loss": rpn_cls + rpn_box + cls + box,
            "rpn_cls": rpn_cls.detach(), "rpn_box": rpn_box.detach(),
            "cls": cls.detach(), "box": box.detach(), "roi_accuracy": accuracy.detach(),
        }  # fmt: skip
        if self.config.masks:
            mask = self.mask_loss(stages, batch["instances"], b[fg], matched[fg], rois[b, r][fg], classes[fg])
            terms["loss"] = terms["loss"] + mask
            terms["mask"] = mask.detach()
        return terms

    def mask_loss(
        self,
        stages: list[Tensor],
        instances: Tensor,
        image: Tensor,
        matched: Tensor,
        boxes: Tensor,
        classes: Tensor,
    ) -> Tensor:
        """L_mask of the foreground candidates on the backbone's stage outputs: image index, matched
        ground truth, box (R, 4) and class + 1 (R,) each; the mean BCE of the class's mask logits
        against `mask_targets`."""
        logits = self.mask_logits(stages, image, boxes)
        if len(logits) == 0:
            return logits.sum() * 0.0  # no foreground: a zero that keeps the graph
        target = self.mask_targets(instances, image, matched, boxes.detach())
        chosen = logits[torch.arange(len(logits), device=logits.device), classes - 1]
        chosen = upcast(chosen)
        return F.binary_cross_entropy_with_logits(chosen, target.to(chosen.dtype))

    @torch.no_grad()
    def predict(self, x: Tensor) -> list[dict[str, Tensor]]:
        """(B, C, H, W) -> one dict {"boxes", "scores", "labels"} per image, best first."""
        c = self.config
        size = tuple(x.shape[-2:])
        stages = self.stages(x)
        features = stages[-1]
        anchor_boxes = self.anchors_for(features)
        proposals, valid = self.proposals(*self.rpn(features), anchor_boxes, size)
        b, r = torch.nonzero(valid, as_tuple=True)
        logits, deltas = self.box_head(features, b, proposals[b, r])
        found = self.detections(logits, deltas, b, proposals[b, r], size, len(x))
        if c.masks:
            for i, d in enumerate(found):
                chosen = self.mask_logits(stages, torch.full_like(d["labels"], i), d["boxes"])
                probs = upcast(chosen[torch.arange(len(chosen), device=x.device), d["labels"]]).sigmoid()
                d["masks"] = paste_masks(probs, upcast(d["boxes"]), *size) >= 0.5
        return found

    def detections(
        self, logits: Tensor, deltas: Tensor, image: Tensor, boxes: Tensor, size: tuple[int, int], batch: int
    ) -> list[dict[str, Tensor]]:
        """The box head's outputs, logits (R, K + 1) and deltas (R, K + 1, 4), for the RoIs (image
        index (R,), boxes (R, 4)) of `batch` images of `size` -> one dict {"boxes", "scores",
        "labels"} per image, best first (see the module docstring: inference)."""
        c, K = self.config, self.config.num_classes
        scores = upcast(logits).softmax(-1)[:, 1:].flatten()  # (R K)
        boxes = decode_boxes(boxes[:, None].expand(-1, K, -1), upcast(deltas[:, 1:]), HEAD_WEIGHTS)
        boxes = clip_boxes(boxes, *size).flatten(0, 1)
        labels = torch.arange(K, device=logits.device).repeat(len(image))
        image = image.repeat_interleave(K)
        keep = (scores > c.score_threshold) & ((boxes[:, 2:] - boxes[:, :2]) >= 1e-2).all(1)
        boxes, scores, labels, image = boxes[keep], scores[keep], labels[keep], image[keep]
        kept = batched_nms(boxes, scores, image * K + labels, c.nms)
        first, _ = _top_per_image(image[kept], c.max_detections, batch)
        kept = kept[first]
        return [
            {"boxes": boxes[kept[image[kept] == i]], "scores": scores[kept[image[kept] == i]],
             "labels": labels[kept[image[kept] == i]]}
            for i in range(batch)
        ]  # fmt: skip
