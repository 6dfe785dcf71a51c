"""Detection metrics: COCO-style average precision (Lin et al., 2014; pycocotools' COCOeval).

For an IoU threshold t and a class k, over the images in order:
1. each image keeps its `max_detections` highest-scoring detections of class k (ties: input order);
2. each detection, by decreasing score, is matched to the unmatched ground-truth box of class k with
   the highest IoU >= t (ties: the later box; a box outside the area range is "ignored" and taken
   only when no other is left); a detection matched to an ignored box, or unmatched with its own
   area outside the range, is left out; an unmatched one is a false positive;
3. all detections of class k are sorted by score (stable: image order, then the image's order),
   precision p_i = TP_i / (TP_i + FP_i) and recall r_i = TP_i / #GT after the i-th;
   p is made non-increasing from the right (the interpolated precision);
4. AP = mean over the 101 recalls r in {0, 0.01, ..., 1} of p at the first i with r_i >= r (0 if none).

mAP@[.5:.95] averages AP over t in {0.5, 0.55, ..., 0.95} and the classes that have ground truth
(a class without any ground-truth box counts nowhere, as COCOeval's -1). Boxes are (x1, y1, x2, y2)
(ops/boxes.py); areas are box areas. With iou_type "segm" (instance segmentation, COCOeval's
"segm") the same rules run on masks: IoU = |A and B| / |A or B| of the pixel sets, areas = pixel
counts. Equal to COCOeval to 1e-6 in both modes (tested against pycocotools).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from deepzoo.ops.boxes import box_area, box_iou

COCO_IOUS = tuple(np.round(np.linspace(0.5, 0.95, 10), 2).tolist())
RECALLS = np.linspace(0.0, 1.0, 101)
AREAS = {"all": (0.0, 1e10), "small": (0.0, 32.0**2), "medium": (32.0**2, 96.0**2), "large": (96.0**2, 1e10)}
"""COCO's area ranges (pixels^2), bounds included on both sides as COCOeval does."""


@dataclass(frozen=True)
class DetectionScores:
    map: float
    """AP averaged over the IoU thresholds and the classes with ground truth (COCO's AP)."""
    map_50: float
    """AP at IoU 0.5 (PASCAL VOC's threshold, COCO's 101-point interpolation)."""
    map_75: float
    """AP at IoU 0.75 (NaN if 0.75 is not among the thresholds)."""
    ap_per_class: list[float]
    """AP of each class averaged over the thresholds; NaN for a class without ground truth."""
    recall: float
    """Recall at the last detection, averaged like `map` (COCO's AR at max_detections)."""
    precision: np.ndarray
    """(T, 101, K) interpolated precision; -1 where class k has no ground truth."""


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of every pair of masks a (D, H, W) and b (G, H, W), bool: (D, G) float64, |A and B| /
    |A or B| (0 where both are empty)."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp_min(1), 0.0)


def _match(iou: np.ndarray, gt_ignore: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy matching of detections (rows, by decreasing score) to ground truth (columns) at one
    threshold, COCOeval's rules: -> (D,) index of the matched box, -1 if none."""
    D, G = iou.shape
    matched_gt = np.zeros(G, dtype=bool)
    match = np.full(D, -1)
    t = min(threshold, 1 - 1e-10)
    for d in range(D):
        candidates = ~matched_gt & (iou[d] >= t)
        if not candidates.any():
            continue
        preferred = candidates & ~gt_ignore
        pool = preferred if preferred.any() else candidates
        values = np.where(pool, iou[d], -np.inf)
        best = G - 1 - int(np.argmax(values[::-1]))  # the last of equal maxima
        match[d], matched_gt[best] = best, True
    return match


def average_precision(
    detections: Sequence[dict[str, torch.Tensor]],
    targets: Sequence[dict[str, torch.Tensor]],
    num_classes: int,
    iou_thresholds: Sequence[float] = COCO_IOUS,
    max_detections: int = 100,
    area: str | tuple[float, float] = "all",
    iou_type: Literal["bbox", "segm"] = "bbox",
) -> DetectionScores:
    """COCO-style AP of per-image detections {"boxes" (D, 4), "scores" (D,), "labels" (D,)}
    against targets {"boxes" (G, 4), "labels" (G,)}, labels in [0, num_classes); see the module
    docstring. `area` is a COCO range name or (min, max) in pixels^2. iou_type "segm" compares
    "masks" (D, H, W) and (G, H, W), bool, instead of the boxes."""
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be bbox or segm, got {iou_type!r}")
    shape, iou_of, area_of = "boxes", box_iou, box_area
    if iou_type == "segm":
        shape, iou_of, area_of = "masks", mask_iou, lambda m: m.flatten(1).sum(1).double()
    if len(detections) != len(targets):
        raise ValueError(f"{len(detections)} detection lists for {len(targets)} images")
    lo, hi = AREAS[area] if isinstance(area, str) else area
    T, K = len(iou_thresholds), num_classes
    # per class: lists over images of (scores, matched (T, D), ignored (T, D)), and the GT count
    scores: list[list[np.ndarray]] = [[] for _ in range(K)]
    matched: list[list[np.ndarray]] = [[] for _ in range(K)]
    ignored: list[list[np.ndarray]] = [[] for _ in range(K)]
    num_gt = np.zeros(K, dtype=np.int64)
    for det, tgt in zip(detections, targets):
        d_boxes, d_scores, d_labels = (det[k].detach().cpu() for k in (shape, "scores", "labels"))
        g_boxes, g_labels = tgt[shape].detach().cpu(), tgt["labels"].detach().cpu()
        _check(d_boxes, d_scores, d_labels, g_boxes, g_labels, K, shape)
        for k in torch.unique(torch.cat([d_labels, g_labels])).tolist():
            gb = g_boxes[g_labels == k]
            gb = gb.double() if shape == "boxes" else gb
            g_area = area_of(gb).numpy()
            g_ignore = (g_area < lo) | (g_area > hi)
            order = np.argsort(g_ignore, kind="stable")  # COCOeval: ignored boxes last
            gb, g_ignore = gb[order], g_ignore[order]
            num_gt[k] += int((~g_ignore).sum())
            keep = d_labels == k
            s = d_scores[keep].double().numpy()
            by_score = np.argsort(-s, kind="stable")[:max_detections]
            db, s = d_boxes[keep][torch.from_numpy(by_score)], s[by_score]
            db = db.double() if shape == "boxes" else db
            d_area = area_of(db).numpy()
            iou = iou_of(db, gb).numpy()
            m = (
                np.stack([_match(iou, g_ignore, t) for t in iou_thresholds])
                if len(s)
                else np.zeros((T, 0), int)
            )
            hit = m >= 0
            matched_ignored = np.append(g_ignore, False)[m]  # m = -1 reads the appended False
            ign = np.where(hit, matched_ignored, (d_area < lo) | (d_area > hi))
            scores[k].append(s)
            matched[k].append(hit)
            ignored[k].append(ign)
    precision = -np.ones((T, len(RECALLS), K))
    recall = -np.ones((T, K))
    for k in range(K):
        if num_gt[k] == 0:
            continue
        s = np.concatenate(scores[k]) if scores[k] else np.zeros(0)
        order = np.argsort(-s, kind="mergesort")
        hit = np.concatenate(matched[k], 1)[:, order] if scores[k] else np.zeros((T, 0), bool)
        ign = np.concatenate(ignored[k], 1)[:, order] if scores[k] else np.zeros((T, 0), bool)
        tp = np.cumsum(hit & ~ign, 1).astype(float)
        fp = np.cumsum(~hit & ~ign, 1).astype(float)
        for t in range(T):
            rc = tp[t] / num_gt[k]
            pr = tp[t] / (tp[t] + fp[t] + np.spacing(1))
            recall[t, k] = rc[-1] if len(rc) else 0.0
            pr = np.maximum.accumulate(pr[::-1])[::-1]  # non-increasing from the right
            idx = np.searchsorted(rc, RECALLS, side="left")
            reached = idx < len(pr)
            precision[t, :, k] = 0.0
            precision[t, reached, k] = pr[idx[reached]]
    valid = num_gt > 0
    per_class = [float(precision[:, :, k].mean()) if valid[k] else float("nan") for k in range(K)]

    def mean_at(t: float | None) -> float:
        p = (
            precision
            if t is None
            else precision[[i for i, x in enumerate(iou_thresholds) if abs(x - t) < 1e-9]]
        )
        p = p[p > -1]
        return float(p.mean()) if p.size else float("nan")

    r = recall[recall > -1]
    return DetectionScores(
        map=mean_at(None), map_50=mean_at(0.5), map_75=mean_at(0.75), ap_per_class=per_class,
        recall=float(r.mean()) if r.size else float("nan"), precision=precision,
    )  # fmt: skip


def _check(d_boxes, d_scores, d_labels, g_boxes, g_labels, num_classes: int, shape: str = "boxes") -> None:
    if shape == "masks":
        if d_boxes.ndim != 3 or g_boxes.ndim != 3 or d_boxes.shape[1:] != g_boxes.shape[1:]:
            raise ValueError(
                f"segm needs detection masks (D, H, W) and target masks (G, H, W) of one size; got "
                f"{tuple(d_boxes.shape)} and {tuple(g_boxes.shape)}"
            )
        if not (len(d_boxes) == len(d_scores) == len(d_labels)) or len(g_boxes) != len(g_labels):
            raise ValueError("segm needs one mask per detection and per target")
        d_boxes, g_boxes = torch.zeros(len(d_boxes), 4), torch.zeros(len(g_boxes), 4)  # shapes checked
    if d_boxes.ndim != 2 or d_boxes.shape[1] != 4 or not (len(d_boxes) == len(d_scores) == len(d_labels)):
        raise ValueError(
            f"detections need boxes (D, 4), scores (D,), labels (D,); got {tuple(d_boxes.shape)}, "
            f"{tuple(d_scores.shape)}, {tuple(d_labels.shape)}"
        )
    if g_boxes.ndim != 2 or g_boxes.shape[1] != 4 or len(g_boxes) != len(g_labels):
        raise ValueError(
            f"targets need boxes (G, 4), labels (G,); got {tuple(g_boxes.shape)}, {tuple(g_labels.shape)}"
        )
    for name, labels in (("detection", d_labels), ("target", g_labels)):
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(
                f"{name} labels must be in [0, {num_classes}), got {labels.min()}..{labels.max()}"
            )
