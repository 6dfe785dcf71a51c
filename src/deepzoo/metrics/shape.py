"""Metrics of 3D shapes: voxel IoU, and the Chamfer distance and F-score of point clouds.

Point clouds are (N, D) tensors (D = 3 for 3D; any D works). With d(p, S) = min_{q in S} |p - q|:
    chamfer(A, B) = mean_{a in A} d(a, B)^2 + mean_{b in B} d(b, A)^2
(squared distances, means over points, the two directions summed: PyTorch3D's chamfer_distance
with its defaults); and at a threshold tau (Tatarchenko et al., 2019)
    precision = |{a in A : d(a, B) < tau}| / |A|,  recall = |{b in B : d(b, A) < tau}| / |B|,
    F = 2 precision recall / (precision + recall)  (0 when both are 0),
A the prediction and B the ground truth. Nearest neighbours are found by brute force over all
pairs, in chunks of A's points so that memory stays at about `budget` floats whatever the sizes
(2^24, 128 MB in float64, by default); the nearest distance is then recomputed from the
coordinates.
"""

from __future__ import annotations

import torch
from torch import Tensor


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


@torch.no_grad()
def nearest_indices(a: Tensor, b: Tensor, budget: int = 2**24) -> Tensor:
    """(..., N, D), (..., M, D) -> (..., N): the index in b of the nearest point to each point of
    a (the leading dimensions batched), found with |p - q|^2 = |p|^2 - 2 p.q + |q|^2 (a matrix
    product) in float64, a chunk of a's points at a time."""
    if a.ndim < 2 or a.shape[:-2] != b.shape[:-2] or a.shape[-1] != b.shape[-1]:
        raise ValueError(
            f"point clouds must be (..., N, D) and (..., M, D), got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    if b.shape[-2] == 0:
        raise ValueError("the point cloud to search is empty")
    b = b.double()
    b_norm = b.square().sum(-1)[..., None, :]  # (..., 1, M)
    rows = max(1, budget // max(1, b.shape[:-1].numel()))
    chunks = torch.split(a.double(), rows, dim=-2)
    return torch.cat([(b_norm - 2 * c @ b.transpose(-1, -2)).argmin(-1) for c in chunks], -1)


def nearest_squared_distances(a: Tensor, b: Tensor, budget: int = 2**24) -> Tensor:
    """(..., N, D), (..., M, D) -> (..., N): min_{q in b} |p - q|^2 for each point p of a, the
    leading dimensions batched: the nearest by `nearest_indices`, its distance recomputed from
    the coordinates (so it is exact, and differentiable, with the gradient flowing to each
    nearest pair). Two neighbours whose squared distances differ by less than about 1e-15 |p|^2
    may be told apart wrongly: the value is then off by that much."""
    index = nearest_indices(a, b, budget)
    nearest = torch.gather(b, -2, index[..., None].expand(*index.shape, b.shape[-1]))
    return (a - nearest).square().sum(-1)


def nearest_distances(a: Tensor, b: Tensor, budget: int = 2**24) -> Tensor:
    """(..., N, D), (..., M, D) -> (..., N): the distance from each point of a to the nearest of b."""
    return nearest_squared_distances(a, b, budget).sqrt()


def chamfer_distance(a: Tensor, b: Tensor, budget: int = 2**24) -> Tensor:
    """(..., N, D), (..., M, D) -> (...): mean squared nearest distance from a to b plus from b to a."""
    return nearest_squared_distances(a, b, budget).mean(-1) + nearest_squared_distances(b, a, budget).mean(-1)


def f_score(pred: Tensor, target: Tensor, tau: float, budget: int = 2**24) -> dict[str, float]:
    """F-score at distance tau of a predicted cloud (N, D) against the true one (M, D):
    {"precision", "recall", "f1"} (see the module docstring)."""
    precision = (nearest_distances(pred, target, budget) < tau).float().mean().item()
    recall = (nearest_distances(target, pred, budget) < tau).float().mean().item()
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}
