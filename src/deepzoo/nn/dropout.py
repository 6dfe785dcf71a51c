"""Inverted dropout (Srivastava et al., 2014, as used in practice), of units and of whole
residual branches (stochastic depth)."""

from __future__ import annotations

import torch
from torch import nn


def dropout(
    x: torch.Tensor, p: float, training: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Training: y = x * m / (1 - p), m_i ~ Bernoulli(1 - p), so E[y] = x; eval: y = x."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return x
    keep = torch.rand(x.shape, device=x.device, generator=generator) >= p
    return x * keep / (1.0 - p)


def drop_path(
    x: torch.Tensor, p: float, training: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Stochastic depth (Huang et al., 2016) of a residual branch x: (B, ...): training,
    y_b = x_b * m_b / (1 - p), m_b ~ Bernoulli(1 - p) per example, so E[y] = x; eval: y = x.

    The paper scales at test time instead (y = (1 - p) x in eval, none in training); the two
    agree in expectation. Ours is torchvision's `stochastic_depth(mode="row")` and timm's
    DropPath, and keeps eval the plain network."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"drop-path probability must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return x
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    keep = torch.rand(shape, device=x.device, generator=generator) >= p
    return x * keep / (1.0 - p)


def linear_decay_rule(num_blocks: int, last: float) -> list[float]:
    """Huang et al.'s drop probabilities of blocks l = 1..L: p_l = (l / L) p_L (the survival
    probability falls linearly from 1 before the first block to 1 - p_L at the last)."""
    return [last * (index + 1) / num_blocks for index in range(num_blocks)]


class Dropout(nn.Module):
    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)
