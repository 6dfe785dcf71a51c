"""Detection against torchvision's Faster R-CNN pieces, given the same inputs: box IoU and GIoU,
NMS, the box coder, clipping, the matcher, the RPN's loss and proposals, and the box head's
inference. Runs where torchvision is installed (it needs a torch build matching its own: CI's
CPU build of torch 2.13 has none; `pip install torch==2.14.1 torchvision==0.29.1` does).

Deliberate differences, not compared here (docs/detection.md): anchors centred on the cells
(torchvision: on their corners, sizes rounded); RoI Align aligned (torchvision's Faster R-CNN:
not); mask targets and pasting as Detectron2's; a ground truth overlapping no anchor matches
nothing (torchvision's low-quality rule matches it to every anchor, with IoU 0).
"""

import pytest
import torch

from deepzoo.models.detection import HEAD_WEIGHTS, DetectorConfig, FasterRCNN
from deepzoo.ops.boxes import (
    BACKGROUND,
    BBOX_CLAMP,
    anchors,
    batched_nms,
    box_iou,
    clip_boxes,
    decode_boxes,
    encode_boxes,
    generalized_box_iou,
    match_boxes,
    nms,
)

tv = pytest.importorskip("torchvision")
from torchvision.models.detection import _utils as tv_utils  # noqa: E402
from torchvision.models.detection.roi_heads import RoIHeads  # noqa: E402
from torchvision.models.detection.rpn import AnchorGenerator, RegionProposalNetwork  # noqa: E402

SIZE = 64


def _boxes(
    n: int, generator: torch.Generator, low: float = 4.0, high: float = 30.0, inside: bool = False
) -> torch.Tensor:
    """n float64 boxes of sides in [low, high), their corners from -4 to SIZE + 4 (inside the
    image when `inside`)."""
    if inside:
        corner = torch.rand(n, 2, generator=generator, dtype=torch.float64) * (SIZE - high)
    else:
        corner = torch.rand(n, 2, generator=generator, dtype=torch.float64) * (SIZE + 8) - 4
    side = low + torch.rand(n, 2, generator=generator, dtype=torch.float64) * (high - low)
    return torch.cat([corner, corner + side], 1)


def test_iou_and_giou_equal_torchvisions():
    g = torch.Generator().manual_seed(0)
    a, b = _boxes(40, g), _boxes(30, g)
    torch.testing.assert_close(box_iou(a, b), tv.ops.box_iou(a, b), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(
        generalized_box_iou(a, b), tv.ops.generalized_box_iou(a, b), rtol=1e-12, atol=1e-15
    )


@pytest.mark.parametrize("kernel", ["blocked", "loop"])
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_nms_and_batched_nms_keep_torchvisions_boxes_in_its_order(kernel, threshold):
    g = torch.Generator().manual_seed(1)
    boxes = _boxes(400, g, 6.0, 24.0)  # about 30 boxes on any pixel: long suppression chains
    scores = torch.randperm(400, generator=g).double() / 400  # distinct: no tie to order
    classes = torch.randint(0, 5, (400,), generator=g)
    expected = tv.ops.nms(boxes, scores, threshold)
    assert 20 < len(expected) < len(boxes)
    torch.testing.assert_close(
        nms(boxes, scores, threshold, block=64, kernel=kernel), expected, rtol=0, atol=0
    )
    expected = tv.ops.batched_nms(boxes, scores, classes, threshold)
    got = batched_nms(boxes, scores, classes, threshold, block=64, kernel=kernel)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), HEAD_WEIGHTS])
def test_the_box_coding_equals_torchvisions_box_coder(weights):
    g = torch.Generator().manual_seed(2)
    reference, target = _boxes(50, g), _boxes(50, g)
    coder = tv_utils.BoxCoder(weights)
    assert coder.bbox_xform_clip == pytest.approx(BBOX_CLAMP, rel=1e-15)
    torch.testing.assert_close(
        encode_boxes(reference, target, weights),
        coder.encode_single(target, reference),
        rtol=1e-12,
        atol=1e-12,
    )
    deltas = torch.randn(50, 4, generator=g, dtype=torch.float64) * torch.tensor(weights, dtype=torch.float64)
    deltas[:5, 2:] = 6.0 * torch.tensor(weights[2:], dtype=torch.float64)  # beyond the clamp
    torch.testing.assert_close(
        decode_boxes(reference, deltas, weights),
        coder.decode_single(deltas, reference),
        rtol=1e-12,
        atol=1e-12,
    )


def test_clipping_equals_torchvisions():
    boxes = _boxes(50, torch.Generator().manual_seed(3))
    torch.testing.assert_close(
        clip_boxes(boxes, 40, SIZE), tv.ops.clip_boxes_to_image(boxes, (40, SIZE)), rtol=0, atol=0
    )


@pytest.mark.parametrize("low_quality", [False, True])
def test_the_matcher_equals_torchvisions_where_every_ground_truth_overlaps_an_anchor(low_quality):
    g = torch.Generator().manual_seed(4)
    grid = anchors((8, 8), 8, (10.0, 16.0, 24.0), (1.0, 2.0)).double()
    gt = _boxes(6, g, 8.0, 30.0, inside=True)
    iou = box_iou(gt, grid)
    assert (iou.max(1).values > 0).all()
    matcher = tv_utils.Matcher(0.5, 0.3, allow_low_quality_matches=low_quality)
    got = match_boxes(iou, 0.5, 0.3, low_quality=low_quality)
    torch.testing.assert_close(got, matcher(iou), rtol=0, atol=0)
    assert (got >= 0).any() and (got == BACKGROUND).any() and (got == -2).any()  # all three cases
    rounded = (iou * 10).round() / 10  # ties, and values exactly at both thresholds
    assert (rounded == 0.5).any() and (rounded == 0.3).any()
    got = match_boxes(rounded, 0.5, 0.3, low_quality=low_quality)
    torch.testing.assert_close(got, matcher(rounded), rtol=0, atol=0)


def _detector() -> FasterRCNN:
    config = DetectorConfig(widths=(8, 16, 16), rpn_batch=100_000, pre_nms_test=200, post_nms_test=50)
    return FasterRCNN(config).double()


def _torchvision_rpn(config: DetectorConfig) -> RegionProposalNetwork:
    """torchvision's RPN with our thresholds and sizes; the anchor generator and head are unused."""
    return RegionProposalNetwork(
        AnchorGenerator(((16,),), ((1.0,),)), torch.nn.Identity(),
        fg_iou_thresh=config.rpn_fg_iou, bg_iou_thresh=config.rpn_bg_iou,
        batch_size_per_image=config.rpn_batch, positive_fraction=0.5,
        pre_nms_top_n={"training": config.pre_nms_train, "testing": config.pre_nms_test},
        post_nms_top_n={"training": config.post_nms_train, "testing": config.post_nms_test},
        nms_thresh=config.rpn_nms,
    )  # fmt: skip


def _scene(g: torch.Generator, model: FasterRCNN):
    """Random RPN outputs on an 8 x 8 map and padded ground truths (3 and 2 boxes) of 2 images."""
    grid = anchors((8, 8), model.stride, model.config.anchor_sizes, model.config.anchor_ratios).double()
    objectness = torch.randn(2, len(grid), generator=g, dtype=torch.float64) * 3
    deltas = torch.randn(2, len(grid), 4, generator=g, dtype=torch.float64) * 0.3
    gt = _boxes(6, g, 10.0, 30.0, inside=True).view(2, 3, 4)
    valid = torch.tensor([[True, True, True], [True, True, False]])
    return grid, objectness, deltas, gt, valid


def test_the_rpn_loss_equals_torchvisions_when_every_anchor_is_sampled():
    """With a sample larger than the anchors both losses take every positive and negative anchor:
    the sampling's randomness drops out and the matching, targets and loss terms must agree."""
    model = _detector()
    rpn = _torchvision_rpn(model.config)
    g = torch.Generator().manual_seed(5)
    grid, objectness, deltas, gt, valid = _scene(g, model)
    assert (box_iou(gt, grid).max(-1).values[valid] > 0).all()
    cls, box = model.rpn_loss(objectness, deltas, grid, gt, valid)
    targets = [{"boxes": gt[b][valid[b]]} for b in range(2)]
    labels, matched = rpn.assign_targets_to_anchors([grid, grid], targets)
    labels = [lab.double() for lab in labels]  # torchvision's are float32: its loss would round
    regression = rpn.box_coder.encode(matched, [grid, grid])
    expected_cls, expected_box = rpn.compute_loss(
        objectness.reshape(-1, 1), deltas.reshape(-1, 4), labels, regression
    )
    torch.testing.assert_close(cls, expected_cls, rtol=1e-12, atol=0)
    torch.testing.assert_close(box, expected_box, rtol=1e-12, atol=0)
    assert box > 0 and sum(int((lab == 1).sum()) for lab in labels) > 2  # positives were compared


@pytest.mark.parametrize("training", [True, False])
def test_the_proposals_equal_torchvisions_filtered_proposals(training):
    """Decode, clip, drop boxes under 1e-3 px, NMS at 0.7, the best post_nms: the same boxes in
    the same order (torchvision ranks by sigmoid(o), we by o: the same order)."""
    model = _detector().train(training)
    rpn = _torchvision_rpn(model.config).train(training)
    g = torch.Generator().manual_seed(6)
    grid, objectness, deltas, _, _ = _scene(g, model)
    proposals, valid = model.proposals(objectness, deltas, grid, (SIZE, SIZE - 8))
    decoded = rpn.box_coder.decode(deltas.reshape(-1, 4), [grid, grid]).view(2, -1, 4)
    expected, _ = rpn.filter_proposals(decoded, objectness, [(SIZE, SIZE - 8)] * 2, [len(grid)])
    for b in range(2):
        assert (
            10 < len(expected[b]) <= (model.config.post_nms_train if training else model.config.post_nms_test)
        )
        torch.testing.assert_close(proposals[b][valid[b]], expected[b], rtol=1e-12, atol=1e-12)


def test_the_detections_equal_torchvisions_postprocessed_detections():
    """Softmax, class-wise decoding with weights (10, 10, 5, 5), clipping, scores > 0.05, boxes
    of at least 1e-2 px, NMS at 0.5 per class, the best 100: torchvision's labels count the
    background as 0, ours start at the first object class."""
    model = _detector()
    c = model.config
    heads = RoIHeads(
        None, None, None, c.roi_iou, c.roi_iou, c.roi_batch, c.roi_positive_fraction,
        HEAD_WEIGHTS, c.score_threshold, c.nms, c.max_detections,
    )  # fmt: skip
    g = torch.Generator().manual_seed(7)
    image = torch.tensor([0] * 70 + [1] * 50)
    rois = _boxes(120, g, 6.0, 30.0).clamp(0, SIZE)
    logits = torch.randn(120, c.num_classes + 1, generator=g, dtype=torch.float64) * 2
    deltas = torch.randn(120, c.num_classes + 1, 4, generator=g, dtype=torch.float64) * 0.5
    found = model.detections(logits, deltas, image, rois, (SIZE, SIZE), 2)
    boxes, scores, labels = heads.postprocess_detections(
        logits, deltas.flatten(1), [rois[image == 0], rois[image == 1]], [(SIZE, SIZE)] * 2
    )
    for b in range(2):
        assert 20 < len(scores[b]) <= c.max_detections
        torch.testing.assert_close(found[b]["boxes"], boxes[b], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(found[b]["scores"], scores[b], rtol=1e-12, atol=0)
        torch.testing.assert_close(found[b]["labels"] + 1, labels[b], rtol=0, atol=0)
