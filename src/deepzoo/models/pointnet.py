"""A point-cloud autoencoder: a PointNet encoder and a fully connected decoder (Achlioptas et al.,
2018, "Learning Representations and Generative Models for 3D Point Clouds").

points (B, N, 3) -> z (B, latent) -> reconstruction (B, P, 3):
    encoder: h_i = MLP(p_i) for each point (shared weights, ReLU after every layer), then
             z = max_i h_i, which makes z invariant to the order of the points (Qi et al., 2017);
    decoder: an MLP from z to P x 3 coordinates (its P outputs are an unordered set too).
The loss is the Chamfer distance (ops/points.py) between the reconstruction and the input,
averaged over the batch; it needs no correspondence between the two sets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from deepzoo.config import Count, Sizes
from deepzoo.nn.precision import upcast
from deepzoo.ops.points import chamfer_distance


@dataclass(frozen=True)
class PointAEConfig:
    points: Count = 256
    """Points of a reconstruction."""
    encoder: Sizes = (64, 128, 256)
    """Widths of the shared per-point MLP."""
    latent: Count = 128
    decoder: Sizes = (256, 512)
    """Hidden widths of the decoder MLP."""


def mlp(widths: list[int], last_activation: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(w_in, w_out))
        if last_activation or i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class PointNetAutoencoder(nn.Module):
    def __init__(self, config: PointAEConfig = PointAEConfig()) -> None:
        super().__init__()
        self.config = config
        self.point_mlp = mlp([3, *config.encoder, config.latent], last_activation=True)
        self.decoder = mlp([config.latent, *config.decoder, 3 * config.points], last_activation=False)

    def encode(self, points: Tensor) -> Tensor:
        """(B, N, 3) -> (B, latent): the max over points of the shared MLP's features."""
        if points.ndim != 3 or points.shape[-1] != 3:
            raise ValueError(f"expected point clouds (B, N, 3), got {tuple(points.shape)}")
        return self.point_mlp(points).amax(1)

    def decode(self, z: Tensor) -> Tensor:
        """(B, latent) -> (B, P, 3)."""
        return self.decoder(z).unflatten(-1, (self.config.points, 3))

    def forward(self, points: Tensor) -> Tensor:
        return self.decode(self.encode(points))

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Mean over the batch of chamfer(reconstruction, input)."""
        return {"loss": chamfer_distance(upcast(self(batch["points"])), upcast(batch["points"])).mean()}

    @torch.no_grad()
    def reconstruct(self, points: Tensor) -> Tensor:
        return self(points)
