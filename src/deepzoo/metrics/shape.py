"""Metrics of 3D shapes: voxel IoU, and the Chamfer distance (ops/points.py) and F-score of point
clouds.

Point clouds are (N, D) tensors (D = 3 for 3D; any D works), d(p, S) = min_{q in S} |p - q|. At a
threshold tau (Tatarchenko et al., 2019)
    precision = |{a in A : d(a, B) < tau}| / |A|,  recall = |{b in B : d(b, A) < tau}| / |B|,
    F = 2 precision recall / (precision + recall)  (0 when both are 0),
A the prediction and B the ground truth.
"""

from __future__ import annotations

import torch
from torch import Tensor

from deepzoo.ops.points import chamfer_distance, nearest_distances, nearest_indices, nearest_squared_distances

__all__ = [
    "chamfer_distance", "cloud_scores", "f_score", "f_scores", "nearest_distances", "nearest_indices",
    "nearest_squared_distances", "voxel_iou", "voxelize",
]  # fmt: skip


def voxel_iou(pred: Tensor, target: Tensor) -> Tensor:
    """Occupancy grids (..., D, H, W), bool or {0, 1} -> (...): |pred n target| / |pred u target|,
    1 where both are empty (identical shapes)."""
    if pred.shape != target.shape:
        raise ValueError(f"voxel grids differ in shape: {tuple(pred.shape)} vs {tuple(target.shape)}")
    pred, target = pred.bool(), target.bool()
    inter = (pred & target).flatten(-3).sum(-1)
    union = (pred | target).flatten(-3).sum(-1)
    return torch.where(union > 0, inter / union.clamp_min(1), 1.0)


def voxelize(points: Tensor, resolution: int, low: float = -1.0, high: float = 1.0) -> Tensor:
    """Point clouds (..., N, 3) -> occupancy grids (..., R, R, R) bool over the cube [low, high]^3
    cut into R^3 equal voxels, indexed (x, y, z); a voxel is occupied when a point falls in it
    (points outside the cube go to the nearest border voxel)."""
    index = ((points - low) / (high - low) * resolution).floor().long().clamp(0, resolution - 1)
    flat = (index[..., 0] * resolution + index[..., 1]) * resolution + index[..., 2]  # (..., N)
    grid = torch.zeros(*points.shape[:-2], resolution**3, dtype=torch.bool, device=points.device)
    grid.scatter_(-1, flat, True)
    return grid.unflatten(-1, (resolution,) * 3)


def _f_of_distances(d_pred: Tensor, d_target: Tensor, tau: float) -> dict[str, Tensor]:
    """Precision, recall and F from the nearest distances (..., N) of the predicted points to the
    truth and (..., M) of the true points to the prediction."""
    precision, recall = (d_pred < tau).float().mean(-1), (d_target < tau).float().mean(-1)
    total = precision + recall
    f1 = torch.where(total > 0, 2 * precision * recall / total.clamp_min(1e-12), 0.0)
    return {"precision": precision, "recall": recall, "f1": f1}


def f_scores(pred: Tensor, target: Tensor, tau: float, budget: int = 2**24) -> dict[str, Tensor]:
    """F-scores at distance tau of predicted clouds (..., N, D) against true ones (..., M, D), the
    leading dimensions batched: {"precision", "recall", "f1"}, each (...) float32 (see the module
    docstring)."""
    return _f_of_distances(
        nearest_distances(pred, target, budget), nearest_distances(target, pred, budget), tau
    )


def cloud_scores(pred: Tensor, target: Tensor, tau: float, budget: int = 2**24) -> dict[str, Tensor]:
    """`chamfer_distance` and `f_scores` of clouds (..., N, D) against (..., M, D), each (...), from
    one nearest-neighbour search each way (the costly part of both)."""
    sq_pred, sq_target = (
        nearest_squared_distances(pred, target, budget),
        nearest_squared_distances(target, pred, budget),
    )
    chamfer = sq_pred.mean(-1) + sq_target.mean(-1)
    return {"chamfer": chamfer} | _f_of_distances(sq_pred.sqrt(), sq_target.sqrt(), tau)


def f_score(pred: Tensor, target: Tensor, tau: float, budget: int = 2**24) -> dict[str, float]:
    """F-score at distance tau of one predicted cloud (N, D) against the true one (M, D):
    {"precision", "recall", "f1"} as floats (`f_scores` batches clouds)."""
    if pred.ndim != 2:
        raise ValueError(f"f_score takes one cloud (N, D), got {tuple(pred.shape)}: use f_scores")
    scores = f_scores(pred, target, tau, budget)
    precision, recall = scores["precision"].item(), scores["recall"].item()
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}
