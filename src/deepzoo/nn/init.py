"""Weight initializations that keep activation variance constant through depth.

For y = W x with W: (D_out, D_in) of i.i.d. zero-mean entries of variance s^2 and x of
second moment q, Var(y_i) = D_in s^2 q. Hence
- Xavier/Glorot (2010): s^2 = 2 / (D_in + D_out) (= 1 / D_in when D_in = D_out, the notes'
  `randn(Din, Dout) / sqrt(Din)`), for tanh-like units, linear around 0;
- Kaiming/He (2015): s^2 = 2 / D_in, for ReLU, which zeroes half of its inputs' second moment.
  (The notes' `randn(Din, Dout) / np.sqrt(2 / Din)` divides where it should multiply.)
For convolutions D_in = C_in * kernel area (fan-in) and D_out = C_out * kernel area.
"""

from __future__ import annotations

import math

import torch


def fans(weight: torch.Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) of a Linear (out, in) or Conv (out, in, *kernel) weight."""
    if weight.ndim < 2:
        raise ValueError(f"fans need a weight of 2+ dimensions, got shape {tuple(weight.shape)}")
    receptive = math.prod(weight.shape[2:])
    return weight.shape[1] * receptive, weight.shape[0] * receptive


@torch.no_grad()
def xavier_normal_(
    weight: torch.Tensor, gain: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """W ~ N(0, gain^2 * 2 / (fan_in + fan_out))."""
    fan_in, fan_out = fans(weight)
    return weight.normal_(0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), generator=generator)


@torch.no_grad()
def kaiming_normal_(weight: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """W ~ N(0, 2 / fan_in), for layers followed by ReLU."""
    fan_in, _ = fans(weight)
    return weight.normal_(0.0, math.sqrt(2.0 / fan_in), generator=generator)
