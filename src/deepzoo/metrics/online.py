"""Metrics of online action detection: per-frame AP (THUMOS'14), calibrated AP (TVSeries) and AP
over portions of actions (how early an action is recognised).

Every frame is scored for every class. A frame's target row y in {0, 1}^C (class 0 background)
makes it a positive of each class it holds and a negative of the others; all-zero rows are not
scored. Per-frame AP of class c ranks all scored frames by their score for c:
    AP = sum_n (R_n - R_{n-1}) P_n
over the distinct scores in decreasing order (frames with equal scores enter together), P_n and
R_n the precision and recall of the frames scoring at least the n-th score: scikit-learn's
`average_precision_score`, which the TRN and IDN evaluation code calls. mAP averages the action
classes (background excluded), skipping a class with no positive frame (its AP is NaN).

Calibrated AP (De Geest et al. 2016, TVSeries) weighs the negatives as if classes were balanced:
with w = #negatives / #positives,
    cPrec = TP / (TP + FP / w),   cAP = sum over positive frames k of cPrec(k) / #positives,
cPrec(k) taken at the score of frame k (ties entering together, as for AP; without ties this is
the formula of the TVSeries code). A class without negatives has cAP = AP = 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def _ranked_counts(scores: torch.Tensor, positive: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cumulative (TP, FP) at the end of each group of equal scores, in decreasing score order."""
    order = torch.argsort(scores, descending=True, stable=True)
    s, pos = scores[order], positive[order].double()
    tp, fp = pos.cumsum(0), (1 - pos).cumsum(0)
    last = torch.ones_like(s, dtype=torch.bool)
    last[:-1] = s[1:] != s[:-1]
    return tp[last], fp[last]


def average_precision(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """scores (F,), positive (F,) bool -> AP (module docstring); NaN without positives."""
    n_pos = int(positive.sum())
    if n_pos == 0:
        return math.nan
    tp, fp = _ranked_counts(scores.double(), positive.bool())
    recall = tp / n_pos
    precision = tp / (tp + fp)
    gained = torch.diff(recall, prepend=recall.new_zeros(1))
    return float((gained * precision).sum())


def calibrated_average_precision(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """scores (F,), positive (F,) bool -> cAP (module docstring); NaN without positives."""
    positive = positive.bool()
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0:
        return math.nan
    if n_neg == 0:
        return 1.0
    w = n_neg / n_pos
    tp, fp = _ranked_counts(scores.double(), positive)
    cprec = w * tp / (w * tp + fp)
    gained = torch.diff(tp, prepend=tp.new_zeros(1))
    return float((gained * cprec).sum() / n_pos)


def _scored(scores: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., C) -> (F, C) of the scored frames (target rows not all zero)."""
    if scores.shape != target.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and target {tuple(target.shape)} differ")
    scores, target = scores.reshape(-1, scores.shape[-1]), target.reshape(-1, target.shape[-1])
    keep = target.sum(1) > 0
    return scores[keep], target[keep] > 0


def _mean(values: Sequence[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def per_frame_map(
    scores: torch.Tensor, target: torch.Tensor, ignore: Sequence[int] = (0,)
) -> dict[str, float | list[float]]:
    """scores, target (..., C) -> {"map", "mcap", "ap" (per class), "cap" (per class)}; the
    classes in `ignore` (background) get NaN and stay out of the means."""
    scores, positive = _scored(scores, target)
    ap, cap = [], []
    for c in range(scores.shape[1]):
        skip = c in ignore
        ap.append(math.nan if skip else average_precision(scores[:, c], positive[:, c]))
        cap.append(math.nan if skip else calibrated_average_precision(scores[:, c], positive[:, c]))
    return {"map": _mean(ap), "mcap": _mean(cap), "ap": ap, "cap": cap}


def action_position(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """target (N, T, C) -> (position, length) (N, T, C) int64: for a frame inside an action of
    class c (a maximal run of frames marked c in one stream), its index within the run and the
    run's length; 0 and 0 elsewhere."""
    marked = target > 0
    N, T, C = marked.shape
    index = torch.arange(T).view(1, T, 1).expand(N, T, C)
    starts = marked & ~torch.cat([marked.new_zeros(N, 1, C), marked[:, :-1]], 1)
    ends = marked & ~torch.cat([marked[:, 1:], marked.new_zeros(N, 1, C)], 1)
    last_start = torch.where(starts, index, -1).cummax(1).values
    next_end = torch.where(ends, index, T).flip(1).cummin(1).values.flip(1)
    position = torch.where(marked, index - last_start, 0)
    length = torch.where(marked, next_end - last_start + 1, 0)
    return position, length


def portion_map(
    scores: torch.Tensor,
    target: torch.Tensor,
    portions: Sequence[tuple[float, float]],
    ignore: Sequence[int] = (0,),
) -> list[float]:
    """Per-frame mAP counting, as positives of class c, only the frames of c-actions whose
    relative position (index within the action) / (its length) lies in [low, high); the other
    frames of c-actions are left out and every frame not of c is a negative (TRN's Table 4:
    mAP at portions of actions, e.g. (0, 0.1) for the first tenth). scores, target (N, T, C)."""
    if scores.shape != target.shape or scores.dim() != 3:
        raise ValueError(f"need scores and target of one shape (N, T, C), got {scores.shape}, {target.shape}")
    position, length = action_position(target)
    relative = position.double() / length.clamp(min=1)
    scored = target.sum(-1) > 0  # (N, T)
    results = []
    for low, high in portions:
        aps = []
        for c in range(scores.shape[-1]):
            if c in ignore:
                continue
            marked = target[..., c] > 0
            inside = marked & (relative[..., c] >= low) & (relative[..., c] < high)
            keep = scored & (inside | ~marked)
            aps.append(average_precision(scores[..., c][keep], inside[keep]))
        results.append(_mean(aps))
    return results
