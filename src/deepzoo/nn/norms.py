"""Batch, layer and instance normalization from their equations (Ioffe & Szegedy, 2015;
Ba et al., 2016; Ulyanov et al., 2016). Parameter and buffer names follow torch.nn, so weights copy.

All three compute  y = gamma * (x - mu) / sqrt(sigma^2 + eps) + beta  and differ in the axes of
mu and sigma^2 (biased variance), for x: (N, C, *spatial):
- BatchNorm:    over N and the spatial axes, per channel; running averages for eval, updated as
                r <- (1 - momentum) r + momentum * stat (the variance unbiased: * n / (n - 1)).
- LayerNorm:    over the last len(normalized_shape) axes, per example.
- InstanceNorm: over the spatial axes, per example and channel.
"""

from __future__ import annotations

import torch
from torch import nn


def _normalize(
    x: torch.Tensor, dims: tuple[int, ...], eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    mean = x.mean(dim=dims, keepdim=True)
    var = x.var(dim=dims, keepdim=True, unbiased=False)
    return (x - mean) * torch.rsqrt(var + eps), mean, var


def _channel_shape(x: torch.Tensor) -> tuple[int, ...]:
    return (1, -1) + (1,) * (x.ndim - 2)


class BatchNorm(nn.Module):
    """x: (N, C) or (N, C, *spatial). Batch statistics in training, running ones in eval."""

    def __init__(
        self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True
    ) -> None:
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = (0, *range(2, x.ndim))
        shape = _channel_shape(x)
        if self.training:
            x_hat, mean, var = _normalize(x, dims, self.eps)
            n = x.numel() // x.shape[1]
            with torch.no_grad():
                self.running_mean.lerp_(mean.flatten(), self.momentum)
                self.running_var.lerp_(var.flatten() * n / max(n - 1, 1), self.momentum)
                self.num_batches_tracked += 1
        else:
            x_hat = (x - self.running_mean.view(shape)) * torch.rsqrt(self.running_var.view(shape) + self.eps)
        if self.weight is not None:
            x_hat = x_hat * self.weight.view(shape) + self.bias.view(shape)
        return x_hat


class LayerNorm(nn.Module):
    """Normalizes over the trailing `normalized_shape` axes of each example; same in train and eval."""

    def __init__(
        self, normalized_shape: int | tuple[int, ...], eps: float = 1e-5, affine: bool = True
    ) -> None:
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.normalized_shape, self.eps = shape, eps
        self.weight = nn.Parameter(torch.ones(shape)) if affine else None
        self.bias = nn.Parameter(torch.zeros(shape)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-len(self.normalized_shape) :]) != self.normalized_shape:
            raise ValueError(f"expected trailing shape {self.normalized_shape}, got {tuple(x.shape)}")
        dims = tuple(range(x.ndim - len(self.normalized_shape), x.ndim))
        x_hat, _, _ = _normalize(x, dims, self.eps)
        return x_hat * self.weight + self.bias if self.weight is not None else x_hat


class InstanceNorm(nn.Module):
    """x: (N, C, *spatial), normalized per example and channel over the spatial axes."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim < 3:
            raise ValueError(f"InstanceNorm needs (N, C, *spatial) input, got {tuple(x.shape)}")
        x_hat, _, _ = _normalize(x, tuple(range(2, x.ndim)), self.eps)
        if self.weight is not None:
            shape = _channel_shape(x)
            x_hat = x_hat * self.weight.view(shape) + self.bias.view(shape)
        return x_hat


def feature_standardization(x: torch.Tensor, floor: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and (unbiased) standard deviation of x (..., F) over all leading axes,
    in float64, for inputs standardized as (x - mean) / std. The std is floored at `floor` times
    the largest one, so a feature that never changes stays finite (it standardizes to 0)."""
    flat = x.reshape(-1, x.shape[-1]).double()
    std = flat.std(0)
    return flat.mean(0), std.clamp_min(floor * std.max())
