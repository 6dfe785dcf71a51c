"""MNIST digits as 3D point clouds: each digit's ink extruded into a thin slab, sampled uniformly.

A digit's ink is its pixels with intensity above `ink`; pixel (row i, column j) covers
x in [j/14 - 1, (j+1)/14 - 1], y in [1 - (i+1)/14, 1 - i/14] (so the 28 x 28 image fills
[-1, 1]^2, y up), and the slab spans z in [-thickness/2, thickness/2]. A cloud is `points`
independent uniform samples of that solid: a pixel uniformly among the ink pixels, then a uniform
position inside its voxel column. Deterministic per seed.

TensorData {"points" (N, P, 3) float32, "label" (N,) int64}.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from deepzoo.data.tensors import TensorData


@dataclass(frozen=True)
class CloudConfig:
    points: int = 256
    """Points per cloud."""
    ink: float = 0.5
    """Intensity (of 1) above which a pixel is part of the digit."""
    thickness: float = 0.25
    """Depth of the slab, in the units where the image spans 2."""

    def __post_init__(self) -> None:
        if self.points < 1 or not 0 <= self.ink < 1 or self.thickness < 0:
            raise ValueError(f"need points >= 1, 0 <= ink < 1, thickness >= 0; got {self}")


def digit_clouds(images: torch.Tensor, config: CloudConfig, generator: torch.Generator) -> torch.Tensor:
    """Images (N, 28, 28) uint8 -> clouds (N, points, 3) (see the module docstring). An image
    without ink is refused."""
    inked = (images.float() / 255 > config.ink).flatten(1)  # (N, 784)
    if not inked.any(1).all():
        raise ValueError(f"{int((~inked.any(1)).sum())} images have no pixel above ink={config.ink}")
    N, P = len(images), config.points
    pixel = torch.multinomial(inked.float(), P, replacement=True, generator=generator)  # (N, P)
    row, col = pixel // 28, pixel % 28
    u = torch.rand(N, P, 3, generator=generator)
    x = (col + u[..., 0]) / 14 - 1
    y = 1 - (row + u[..., 1]) / 14
    z = (u[..., 2] - 0.5) * config.thickness
    return torch.stack([x, y, z], -1)


def mnist_clouds(
    split: str = "train", n: int = 10_000, seed: int = 0, config: CloudConfig = CloudConfig(), device="cpu"
) -> TensorData:
    """Clouds of the first `n` digits of MNIST `split`."""
    from deepzoo.data.mnist import read_mnist

    images, labels = read_mnist(split)
    if not 1 <= n <= len(images):
        raise ValueError(f"n must be in [1, {len(images)}] for MNIST {split}, got {n}")
    points = digit_clouds(images[:n], config, torch.Generator().manual_seed(seed))
    return TensorData({"points": points, "label": labels[:n]}).to(device)
