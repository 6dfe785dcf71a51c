"""Activation functions from their definitions (the course notes' list), as functions and modules."""

from __future__ import annotations

import math

import torch
from torch import nn

SELU_ALPHA = 1.6732632423543772848170429916717  # Klambauer et al. (2017), eq. 14
SELU_SCALE = 1.0507009873554804934193349852946


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    """1 / (1 + e^-x), computed without overflow for large |x| from e = e^-|x| <= 1. (-|x| is
    written as a where, not abs: abs's gradient at 0 is 0, which would make sigmoid'(0) 0, not 1/4.)"""
    e = torch.exp(torch.where(x >= 0, -x, x))
    return torch.where(x >= 0, 1 / (1 + e), e / (1 + e))


def tanh(x: torch.Tensor) -> torch.Tensor:
    """(e^x - e^-x) / (e^x + e^-x) = 2 sigmoid(2x) - 1."""
    return 2 * sigmoid(2 * x) - 1


def relu(x: torch.Tensor) -> torch.Tensor:
    """max(0, x), with gradient 0 at x = 0 as torch's. (Not clamp: the gradient of clamp at its
    bound is 1 in torch 2.13 and 0 in 2.14, so every kink here is written as a where.)"""
    return torch.where(x > 0, x, torch.zeros_like(x))


def leaky_relu(x: torch.Tensor, slope: float = 0.01) -> torch.Tensor:
    """max(slope x, x) for 0 <= slope < 1 (the notes use slope 0.1); at the kink x = 0 the
    gradient is slope, as torch's."""
    return torch.where(x > 0, x, slope * x)


def elu(x: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """x for x > 0, alpha (e^x - 1) otherwise (the gradient at 0 is alpha, as torch's); e^x is
    formed only for x <= 0, so a large x overflows neither the value nor the gradient."""
    negative = torch.where(x > 0, torch.zeros_like(x), x)
    return torch.where(x > 0, x, alpha * torch.expm1(negative))


def selu(x: torch.Tensor) -> torch.Tensor:
    """scale * elu(x, alpha) with the self-normalizing constants of Klambauer et al. (2017)."""
    return SELU_SCALE * elu(x, SELU_ALPHA)


def gelu(x: torch.Tensor, approximate: bool = False) -> torch.Tensor:
    """x Phi(x) = x/2 (1 + erf(x / sqrt 2)); the tanh approximation of Hendrycks & Gimpel (2016)
    when `approximate`: x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    if approximate:
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


class PReLU(nn.Module):
    """max(0, x) + a min(0, x) with a learned slope a per channel (He et al., 2015), a_0 = 0.25."""

    def __init__(self, num_parameters: int = 1, init: float = 0.25) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((num_parameters,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.weight.view((1, -1) + (1,) * (x.ndim - 2)) if x.ndim >= 2 else self.weight
        return torch.where(x > 0, x, a * x)


class Maxout(nn.Module):
    """max_k (W_k x + b_k) over k = 1..pieces (Goodfellow et al., 2013). x: (*, D_in) -> (*, D_out)."""

    def __init__(self, in_features: int, out_features: int, pieces: int = 2) -> None:
        super().__init__()
        self.out_features, self.pieces = out_features, pieces
        self.linear = nn.Linear(in_features, out_features * pieces)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.linear(x).unflatten(-1, (self.out_features, self.pieces))  # (*, D_out, k)
        return z.amax(dim=-1)


class Activation(nn.Module):
    """A parameter-free activation by name, for configs: relu, tanh, sigmoid, leaky_relu, elu, selu, gelu."""

    FUNCTIONS = {
        "relu": relu,
        "tanh": tanh,
        "sigmoid": sigmoid,
        "leaky_relu": leaky_relu,
        "elu": elu,
        "selu": selu,
        "gelu": gelu,
    }

    def __init__(self, name: str) -> None:
        super().__init__()
        if name not in self.FUNCTIONS:
            raise ValueError(f"activation must be one of {sorted(self.FUNCTIONS)}, got {name!r}")
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.FUNCTIONS[self.name](x)
