"""Nearest neighbours between point clouds and the Chamfer distance, batched and chunked: the
loss of point-cloud models (models/pointnet.py) and a metric (metrics/shape.py).

Point clouds are (..., N, D) tensors, the leading dimensions batched. With d(p, S) = min_{q in S} |p - q|:
    chamfer(A, B) = mean_{a in A} d(a, B)^2 + mean_{b in B} d(b, A)^2
(squared distances, means over points, the two directions summed: PyTorch3D's chamfer_distance
with its defaults; some papers halve it or use unsquared distances). Nearest neighbours are found
by brute force over all pairs, in chunks of A's points so that memory stays at about `budget`
floats whatever the sizes (2^24, 128 MB in float64, by default); the nearest distance is then
recomputed from the coordinates.
"""

from __future__ import annotations

import torch
from torch import Tensor


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
