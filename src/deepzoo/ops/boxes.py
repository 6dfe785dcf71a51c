"""Box operations for detection: areas, IoU and GIoU, the R-CNN box encoding, NMS, RoI Align and
anchors, as plain vectorized functions.

Conventions (torchvision's and Detectron2's): a box is (x1, y1, x2, y2) in continuous pixel
coordinates, pixel (row i, column j) covering [j, j + 1) x [i, i + 1), so a box around pixels
j0..j1 is (j0, i0, j1 + 1, i1 + 1) and its area is (x2 - x1)(y2 - y1), without the "+ 1" of the
old PASCAL VOC code. Boxes are (..., 4) tensors; a box with x2 <= x1 or y2 <= y1 has area 0.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from deepzoo.ops import nms_loop


def box_area(boxes: Tensor) -> Tensor:
    """(..., 4) -> (...): (x2 - x1)(y2 - y1), 0 for an empty box."""
    return (boxes[..., 2] - boxes[..., 0]).clamp_min(0) * (boxes[..., 3] - boxes[..., 1]).clamp_min(0)


def _inter_union(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    lt = torch.maximum(a[..., :, None, :2], b[..., None, :, :2])
    rb = torch.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    wh = (rb - lt).clamp_min(0)
    inter = wh[..., 0] * wh[..., 1]
    return inter, box_area(a)[..., :, None] + box_area(b)[..., None, :] - inter


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """(..., N, 4), (..., M, 4) -> (..., N, M): |a n b| / |a u b|, defined 0 where the union is
    empty (two zero-area boxes; torchvision gives NaN there). Leading dimensions broadcast (a
    batch of images, each with its own boxes)."""
    inter, union = _inter_union(a, b)
    return torch.where(union > 0, inter / union.clamp_min(torch.finfo(inter.dtype).tiny), 0.0)


def generalized_box_iou(a: Tensor, b: Tensor) -> Tensor:
    """(..., N, 4), (..., M, 4) -> (..., N, M): GIoU = IoU - |C \\ (a u b)| / |C|, C the smallest
    box enclosing both (Rezatofighi et al., 2019); in [-1, 1]. Where C is empty (two boxes degenerate on one
    line or point) the correction is 0."""
    inter, union = _inter_union(a, b)
    iou = torch.where(union > 0, inter / union.clamp_min(torch.finfo(inter.dtype).tiny), 0.0)
    lt = torch.minimum(a[..., :, None, :2], b[..., None, :, :2])
    rb = torch.maximum(a[..., :, None, 2:], b[..., None, :, 2:])
    wh = (rb - lt).clamp_min(0)
    hull = wh[..., 0] * wh[..., 1]
    return iou - torch.where(hull > 0, (hull - union) / hull.clamp_min(torch.finfo(hull.dtype).tiny), 0.0)


BBOX_CLAMP = math.log(1000.0 / 16)
"""Largest dw, dh decoded (Detectron2's and torchvision's): exp of it scales a box by 62.5."""


def encode_boxes(
    reference: Tensor, target: Tensor, weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
) -> Tensor:
    """R-CNN regression targets of `target` boxes relative to `reference` boxes (both (..., 4)):

        dx = wx (gx - px) / pw,  dy = wy (gy - py) / ph,  dw = ww log(gw / pw),  dh = wh log(gh / ph)

    with (px, py, pw, ph) the reference's centre and size (Girshick et al., 2014). Sizes must be > 0."""
    pw, ph = reference[..., 2] - reference[..., 0], reference[..., 3] - reference[..., 1]
    px, py = reference[..., 0] + 0.5 * pw, reference[..., 1] + 0.5 * ph
    gw, gh = target[..., 2] - target[..., 0], target[..., 3] - target[..., 1]
    gx, gy = target[..., 0] + 0.5 * gw, target[..., 1] + 0.5 * gh
    wx, wy, ww, wh = weights
    return torch.stack(
        [wx * (gx - px) / pw, wy * (gy - py) / ph, ww * torch.log(gw / pw), wh * torch.log(gh / ph)], -1
    )


def decode_boxes(
    reference: Tensor,
    deltas: Tensor,
    weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0),
    clamp: float = BBOX_CLAMP,
) -> Tensor:
    """The inverse of `encode_boxes`: boxes (..., 4) from reference boxes and deltas, dw and dh
    clamped at `clamp` so exp cannot overflow."""
    pw, ph = reference[..., 2] - reference[..., 0], reference[..., 3] - reference[..., 1]
    px, py = reference[..., 0] + 0.5 * pw, reference[..., 1] + 0.5 * ph
    wx, wy, ww, wh = weights
    cx, cy = px + deltas[..., 0] / wx * pw, py + deltas[..., 1] / wy * ph
    w = pw * torch.exp((deltas[..., 2] / ww).clamp(max=clamp))
    h = ph * torch.exp((deltas[..., 3] / wh).clamp(max=clamp))
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], -1)


def clip_boxes(boxes: Tensor, height: int, width: int) -> Tensor:
    """Boxes clipped into the image [0, width] x [0, height]."""
    x = boxes[..., 0::2].clamp(0, width)
    y = boxes[..., 1::2].clamp(0, height)
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], -1)


NMSKernel = Literal["auto", "loop", "blocked"]


def nms(
    boxes: Tensor, scores: Tensor, iou_threshold: float, block: int = 256, kernel: NMSKernel = "auto"
) -> Tensor:
    """Greedy non-maximum suppression: visit boxes by decreasing score (ties: lower index first)
    and keep a box unless a kept box overlaps it with IoU > iou_threshold (strictly, as
    torchvision). Returns the kept indices, by decreasing score.

    Two kernels give the same indices. "loop" (CPU, float32/64, needs numba) is the sequential
    loop compiled (`ops.nms_loop`), as torchvision's C++. "blocked" (any device) is exact greedy NMS
    in tensor operations, in blocks of the sorted boxes: a block's boxes are first suppressed
    by the boxes kept in earlier blocks (one IoU matrix), then resolved among themselves by the
    recursion keep_j = not any_{i<j} (keep_i and IoU_ij > t), iterated from "all kept" to its
    fixed point (entry j is final after j rounds; the rounds needed are the longest suppression
    chain, usually a few). Memory is O(block x kept), never N^2. "auto" takes the loop where it
    can run (faster on CPU at every size measured: `deepzoo bench nms-speed`), else the blocks."""
    if boxes.ndim != 2 or boxes.shape[-1] != 4 or scores.shape != boxes.shape[:1]:
        raise ValueError(
            f"nms needs boxes (N, 4) and scores (N,), got {tuple(boxes.shape)}, {tuple(scores.shape)}"
        )
    order = torch.sort(scores, descending=True, stable=True).indices
    groups = torch.zeros(len(boxes), dtype=torch.long, device=boxes.device)
    return order[_greedy_nms(boxes[order], groups, iou_threshold, block, kernel)]


def batched_nms(
    boxes: Tensor,
    scores: Tensor,
    classes: Tensor,
    iou_threshold: float,
    block: int = 256,
    kernel: NMSKernel = "auto",
) -> Tensor:
    """NMS within each class: a box is suppressed only by kept boxes of its own class. Returns
    the kept indices by decreasing score (ties: lower index first), as torchvision's.

    The boxes are sorted by class, then by decreasing score within a class, and run through the
    blocked greedy NMS of `nms`, with IoU across classes counted as 0; a block is compared only
    with the kept boxes of the classes it holds (a suffix of the kept list), so many classes
    (or images, as an RPN batches them) cost about as much as one class of their total size.
    (torchvision's offset trick instead shifts each class's boxes apart and runs one NMS, which
    compares every box with all the kept ones.)"""
    if not boxes.shape[:1] == scores.shape == classes.shape:
        raise ValueError(
            f"batched_nms needs boxes (N, 4), scores (N,), classes (N,), got {tuple(boxes.shape)}, "
            f"{tuple(scores.shape)}, {tuple(classes.shape)}"
        )
    by_score = torch.sort(scores, descending=True, stable=True).indices
    by_class = by_score[torch.sort(classes[by_score], stable=True).indices]
    groups = classes[by_class].long()
    kept = by_class[_greedy_nms(boxes[by_class], groups, iou_threshold, block, kernel)]
    score_rank = torch.empty_like(by_score)
    score_rank[by_score] = torch.arange(len(by_score), device=boxes.device)
    return kept[torch.argsort(score_rank[kept])]


def _greedy_nms(boxes: Tensor, groups: Tensor, iou_threshold: float, block: int, kernel: NMSKernel) -> Tensor:
    """Positions kept by greedy NMS within groups of `boxes` (N, 4), given in visiting order,
    with `groups` (N,) non-decreasing."""
    iou_threshold = _threshold_below(iou_threshold, boxes.dtype)
    loop_runs = boxes.device.type == "cpu" and boxes.dtype in (torch.float32, torch.float64)
    if kernel not in ("auto", "loop", "blocked"):
        raise ValueError(f"kernel must be 'auto', 'loop' or 'blocked', got {kernel!r}")
    if kernel == "loop" and not (loop_runs and nms_loop.available()):
        raise ValueError(
            "the compiled NMS loop needs float32/float64 boxes on the CPU and numba installed "
            f"(pip install 'deepzoo[detection]'); got {boxes.dtype} on {boxes.device}"
        )
    if kernel == "loop" or (kernel == "auto" and loop_runs and nms_loop.available()):
        kept = nms_loop.greedy_nms(boxes.detach().numpy(), groups.numpy(), iou_threshold)
        return torch.from_numpy(kept)
    return _greedy_nms_blocked(boxes, groups, iou_threshold, block)


def _threshold_below(threshold: float, dtype: torch.dtype) -> float:
    """The largest value of `dtype` <= threshold. A `dtype` IoU x satisfies x > threshold (the real
    number, as torchvision compares a float IoU with a double threshold) exactly when x > this
    value, so both kernels compare in the boxes' dtype without rounding the threshold up: with
    float32 boxes, an IoU of float32(0.3) = 0.300000012 is above t = 0.3."""
    rounded = torch.tensor(threshold, dtype=torch.float64).to(dtype)
    if rounded.double().item() > threshold:
        rounded = torch.nextafter(rounded, torch.tensor(-math.inf, dtype=dtype))
    return rounded.item()


def _greedy_nms_blocked(boxes: Tensor, groups: Tensor, iou_threshold: float, block: int) -> Tensor:
    """`_greedy_nms` in tensor operations, block by block (the recursion in `nms`)."""
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    kept_index = groups.new_zeros(0)
    kept = []
    for start in range(0, len(boxes), block):
        chunk, group = slice(start, start + block), groups[start : start + block]
        first = int(torch.searchsorted(groups[kept_index], group[:1]))  # kept boxes of this block's groups
        earlier = kept_index[first:]
        suppressed = _iou_above(boxes[chunk], areas[chunk], boxes[earlier], areas[earlier], iou_threshold)
        over = _iou_above(boxes[chunk], areas[chunk], boxes[chunk], areas[chunk], iou_threshold).triu_(1)
        if group[0] != group[-1]:  # the block spans groups: no suppression across them
            suppressed &= group[:, None] == groups[earlier][None]
            over &= group[:, None] == group[None]
        alive = ~suppressed.any(1)
        keep = alive.clone()  # i < j in `over`; a suppressed i never counts: keep_i is False
        while True:
            new = alive & ~(over & keep[:, None]).any(0)
            if torch.equal(new, keep):
                break
            keep = new
        index = torch.nonzero(keep).squeeze(1) + start
        kept.append(index)
        kept_index = torch.cat([kept_index, index])
    return torch.cat(kept) if kept else groups[:0]


def _iou_above(a: Tensor, area_a: Tensor, b: Tensor, area_b: Tensor, threshold: float) -> Tensor:
    """(N, M) bool: IoU(a_i, b_j) > threshold (a value of the boxes' dtype: `_threshold_below`),
    as torchvision's NMS kernel computes it
    (inter / (area_a + area_b - inter) in the boxes' dtype; 0 / 0 is NaN, never above), with
    in-place steps to spare the memory traffic of `box_iou`."""
    w = (
        torch.minimum(a[:, None, 2], b[None, :, 2])
        .sub_(torch.maximum(a[:, None, 0], b[None, :, 0]))
        .clamp_min_(0)
    )
    h = (
        torch.minimum(a[:, None, 3], b[None, :, 3])
        .sub_(torch.maximum(a[:, None, 1], b[None, :, 1]))
        .clamp_min_(0)
    )
    inter = w.mul_(h)
    union = (area_a[:, None] + area_b[None, :]).sub_(inter)
    return inter.div_(union) > threshold


BACKGROUND, BETWEEN = -1, -2
"""What `match_boxes` returns for a prediction matched to no ground truth: IoU below the low
threshold (background), or between the thresholds (ignored in training)."""


def match_boxes(iou: Tensor, high: float, low: float, low_quality: bool = False) -> Tensor:
    """Assign each prediction (anchor or proposal) to a ground-truth box, as Faster R-CNN's
    matcher: iou (..., G, N) -> (..., N), the index of the ground truth with the highest IoU if
    that IoU >= high, else BACKGROUND if it is < low, else BETWEEN. Padding ground truths get
    IoU -1 everywhere, so they are never matched.

    low_quality: also match, to its best ground truth, every prediction that has some ground
    truth's highest IoU (ties included), so each ground truth keeps at least its best anchors
    (torchvision's allow_low_quality_matches, except that a ground truth overlapping nothing
    matches nothing, as in Detectron2)."""
    if iou.shape[-2] == 0:
        return torch.full(iou.shape[:-2] + iou.shape[-1:], BACKGROUND, dtype=torch.long, device=iou.device)
    best, index = iou.max(-2)
    matches = torch.where(best >= high, index, torch.where(best < low, BACKGROUND, BETWEEN))
    if low_quality:
        gt_best = iou.max(-1, keepdim=True).values  # (..., G, 1)
        top = ((iou == gt_best) & (gt_best > 0)).any(-2)
        matches = torch.where(top, index, matches)
    return matches


def roi_align(
    features: Tensor,
    rois: Tensor,
    output_size: tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """RoI Align (He et al., 2017) with torchvision's semantics and defaults:

    features (B, C, H, W); rois (R, 5) rows (batch index, x1, y1, x2, y2) in image coordinates.
    Each RoI, scaled by `spatial_scale` (and shifted by -0.5 when `aligned`, so a pixel's value
    sits at its centre), is cut into output_size bins; each bin averages the bilinear
    interpolation of the features at gh x gw evenly spaced points, gh = gw = sampling_ratio, or
    where sampling_ratio <= 0 gh = ceil(roi_h / out_h), gw = ceil(roi_w / out_w) per RoI.
    A point more than one pixel outside the map reads 0; within that margin it is clamped to the
    border. Without `aligned` an RoI is at least 1 x 1 (the original Mask R-CNN code; torchvision's
    default, kept here: detectors should pass aligned=True). Returns (R, C, out_h, out_w).

    Bilinear weights and the outside-the-map rule both factor into a y part and an x part, so an
    RoI's output channel is Wy F Wx^T, with Wy (out_h, H) and Wx (out_w, W) averaging weights:
    two matrix products per image (and their transposes backward) instead of a gather of
    4 gh gw out_h out_w C values per RoI."""
    if rois.ndim != 2 or rois.shape[1] != 5:
        raise ValueError(f"rois must be (R, 5): batch index, x1, y1, x2, y2; got {tuple(rois.shape)}")
    out_h, out_w = output_size
    _, C, H, W = features.shape
    offset = 0.5 if aligned else 0.0
    x1, y1 = rois[:, 1] * spatial_scale - offset, rois[:, 2] * spatial_scale - offset
    roi_w, roi_h = rois[:, 3] * spatial_scale - offset - x1, rois[:, 4] * spatial_scale - offset - y1
    if not aligned:
        roi_w, roi_h = roi_w.clamp_min(1.0), roi_h.clamp_min(1.0)
    if sampling_ratio > 0:
        grid_h = grid_w = torch.full_like(rois[:, 0], sampling_ratio, dtype=torch.long)
    else:
        grid_h, grid_w = torch.ceil(roi_h / out_h).long(), torch.ceil(roi_w / out_w).long()
    wy = _axis_weights(y1, roi_h, out_h, grid_h, H).to(features.dtype)  # (R, out_h, H)
    wx = _axis_weights(x1, roi_w, out_w, grid_w, W).to(features.dtype)  # (R, out_w, W)
    b = rois[:, 0].long()
    order = torch.sort(b, stable=True).indices
    counts = torch.bincount(b, minlength=len(features)).tolist()
    pieces = []
    for image, rows in enumerate(torch.split(order, counts)):
        if len(rows):
            t = torch.einsum("rph,chw->rcpw", wy[rows], features[image])
            pieces.append(torch.einsum("rcpw,rqw->rcpq", t, wx[rows]))
    out = torch.cat(pieces) if pieces else features.new_zeros(0, C, out_h, out_w)
    return out[torch.argsort(order)]


def crop_and_resize(images: Tensor, boxes: Tensor, size: int, sampling_ratio: int = 2) -> Tensor:
    """RoI Align (aligned) of each box (R, 4) on its own image (R, H, W): (R, size, size), what
    roi_align gives for rois (r, box r) on the stack of images, in one batched product instead of
    one per image (a Mask R-CNN target cuts each ground-truth mask to its candidate box)."""
    H, W = images.shape[-2:]
    x1, y1 = boxes[:, 0] - 0.5, boxes[:, 1] - 0.5
    grid = torch.full_like(boxes[:, 0], sampling_ratio, dtype=torch.long)
    wy = _axis_weights(y1, boxes[:, 3] - 0.5 - y1, size, grid, H).to(images.dtype)  # (R, size, H)
    wx = _axis_weights(x1, boxes[:, 2] - 0.5 - x1, size, grid, W).to(images.dtype)  # (R, size, W)
    return torch.einsum("rph,rhw,rqw->rpq", wy, images, wx)


def _axis_weights(start: Tensor, length: Tensor, bins: int, grid: Tensor, size: int) -> Tensor:
    """(R, bins, size): row p holds the weights with which bin p of each RoI averages the pixels
    of one axis: its g = grid[r] sample points at start + (p + (k + 0.5) / g) length / bins,
    each the linear interpolation of its two neighbouring pixels (0 for a point outside)."""
    g_max = max(int(grid.max()), 1) if len(grid) else 1
    k = torch.arange(g_max, device=start.device)
    g = grid.clamp_min(1).to(start.dtype)[:, None, None]
    bin_index = torch.arange(bins, device=start.device, dtype=start.dtype)[None, :, None]
    t = bin_index + (k.to(start.dtype)[None, None, :] + 0.5) / g  # (R, bins, g_max), in bins
    position = start[:, None, None] + t * (length / bins)[:, None, None]
    low, high, frac, inside = _corners(position, size)
    w = F.one_hot(low, size) * (1 - frac)[..., None] + F.one_hot(high, size) * frac[..., None]
    w = w * (inside & (k < grid[:, None, None]))[..., None]
    return w.sum(2) / g


def _corners(t: Tensor, size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Bilinear neighbours along one axis, as torchvision's roi_align: (low, high, weight of
    high, inside) for positions t on an axis of `size` pixels."""
    inside = (t >= -1.0) & (t <= size)
    t = t.clamp_min(0)
    low = t.floor().long()
    at_end = low >= size - 1
    low = torch.where(at_end, size - 1, low)
    high = torch.where(at_end, size - 1, low + 1)
    t = torch.where(at_end, low.to(t.dtype), t)
    return low, high, t - low, inside


def anchors(
    feature_size: tuple[int, int],
    stride: int,
    sizes: tuple[float, ...],
    ratios: tuple[float, ...] = (0.5, 1.0, 2.0),
) -> Tensor:
    """Anchor boxes of a feature map: at every cell (i, j) one box per (size, ratio), centred on
    the cell's centre ((j + 0.5) stride, (i + 0.5) stride), of area size^2 and height / width =
    ratio. Returns (H W A, 4), cell-major then size-major, A = len(sizes) len(ratios).
    (torchvision's AnchorGenerator puts centres on the cells' corners and rounds the sizes;
    Detectron2's `offset=0.5` is this.)"""
    h, w = feature_size
    size = torch.tensor(sizes, dtype=torch.float32)[:, None]
    ratio = torch.tensor(ratios, dtype=torch.float32)[None, :]
    half_w = (size / ratio.sqrt() / 2).reshape(-1)
    half_h = (size * ratio.sqrt() / 2).reshape(-1)
    base = torch.stack([-half_w, -half_h, half_w, half_h], -1)  # (A, 4)
    cy, cx = torch.meshgrid(
        (torch.arange(h, dtype=torch.float32) + 0.5) * stride,
        (torch.arange(w, dtype=torch.float32) + 0.5) * stride,
        indexing="ij",
    )
    centres = torch.stack([cx, cy, cx, cy], -1).reshape(-1, 1, 4)
    return (centres + base[None]).reshape(-1, 4)


def paste_masks(masks: Tensor, boxes: Tensor, height: int, width: int) -> Tensor:
    """Per-RoI masks (D, M, M) (probabilities) -> (D, height, width) in image pixels: pixel (i, j),
    centre (j + 0.5, i + 0.5), reads mask D bilinearly at u = (j + 0.5 - x1) / (x2 - x1) M (and v
    alike; grid_sample, align_corners=False), 0 beyond the mask's border (Detectron2's paste).
    Thresholded at 0.5, a constant-1 mask gives the pixels whose centres lie in the box, less the
    corners: within half a mask cell of two edges the two edge blends multiply below 0.5."""
    D = len(masks)
    if D == 0:
        return masks.new_zeros(0, height, width)
    x1, y1, x2, y2 = (boxes[:, k, None].to(masks.dtype) for k in range(4))
    cols = torch.arange(width, device=masks.device, dtype=masks.dtype) + 0.5
    rows = torch.arange(height, device=masks.device, dtype=masks.dtype) + 0.5
    gx = (cols - x1) / (x2 - x1).clamp_min(1e-6) * 2 - 1  # (D, W) in grid_sample's [-1, 1]
    gy = (rows - y1) / (y2 - y1).clamp_min(1e-6) * 2 - 1  # (D, H)
    grid = torch.stack([gx[:, None, :].expand(D, height, width), gy[:, :, None].expand(D, height, width)], -1)
    pasted = F.grid_sample(masks[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return pasted[:, 0]
