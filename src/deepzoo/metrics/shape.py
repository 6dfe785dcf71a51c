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
    "chamfer_distance", "f_score", "nearest_distances", "nearest_indices", "nearest_squared_distances",
    "voxel_iou", "voxelize",
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


def f_score(pred: Tensor, target: Tensor, tau: float, budget: int = 2**24) -> dict[str, float]:
    """F-score at distance tau of a predicted cloud (N, D) against the true one (M, D):
    {"precision", "recall", "f1"} (see the module docstring)."""
    precision = (nearest_distances(pred, target, budget) < tau).float().mean().item()
    recall = (nearest_distances(target, pred, budget) < tau).float().mean().item()
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}
