"""Invertible layers of normalizing flows: NICE (Dinh et al., 2015), RealNVP (Dinh et al., 2017)
and Glow (Kingma & Dhariwal, 2018).

Every layer maps x to z with a tractable Jacobian:

    forward(x) -> (z, logdet),   logdet = log |det dz/dx|  per example, shape (B,)
    inverse(z) -> x

so that a flow f = f_K o ... o f_1 gives, by the change of variables,

    log p(x) = log p_Z(f(x)) + sum_k log |det df_k/dh_{k-1}|.

x is (B, D) or (B, C, H, W); `out_shape` says how a layer changes the shape of one example
(only Squeeze does). The transforms' own math runs in float32 even under autocast: a coupling's
network may run in bf16, but its scale and shift are cast to float32 before they touch x, so the
inverse undoes the forward to float32 precision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from deepzoo.nn.precision import upcast
from deepzoo.rng import rand

Shape = tuple[int, ...]


class FlowLayer(nn.Module):
    """An invertible map with its log-determinant; see the module docstring."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def out_shape(self, shape: Shape) -> Shape:
        """The shape of one output example for an input example of `shape` (no batch axis)."""
        return shape


def _sum_per_example(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).sum(1)


def _channel_view(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-channel vector (C,) shaped to broadcast against x (B, C, *spatial)."""
    return v.view(1, -1, *([1] * (x.ndim - 2)))


def _positions(x: torch.Tensor) -> int:
    """H * W for images, 1 for vectors: how many times a per-channel log-scale counts."""
    return math.prod(x.shape[2:])


# ------------------------------------------------------------------ masks
def alternating_mask(dim: int, parity: int) -> torch.Tensor:
    """(1, D): 1 on the features whose index has `parity` (NICE's odd/even partition)."""
    return (torch.arange(dim) % 2 == parity).float().unsqueeze(0)


def checkerboard_mask(height: int, width: int, parity: int) -> torch.Tensor:
    """(1, 1, H, W): 1 where (i + j) % 2 == parity (RealNVP's spatial checkerboard)."""
    i, j = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return ((i + j) % 2 == parity).float().view(1, 1, height, width)


def channel_mask(channels: int, parity: int) -> torch.Tensor:
    """(1, C, 1, 1): 1 on the first half of the channels (parity 0) or on the second (parity 1)."""
    half = torch.arange(channels) < channels // 2
    return (half if parity == 0 else ~half).float().view(1, channels, 1, 1)


# ------------------------------------------------------------------ couplings
class Coupling(FlowLayer):
    """A coupling layer on a fixed binary mask b: the part where b = 1 passes through unchanged
    and conditions the rest, whose Jacobian block is then diagonal (the whole Jacobian triangular):

        additive (NICE):   z_2 = x_2 + m                        logdet = 0
        affine (RealNVP):  z_2 = x_2 * exp(s) + t,              s = scale * tanh(s_raw)
        affine (Glow):     z_2 = (x_2 + t) * sigmoid(s_raw + 2)  (s = log sigmoid(s_raw + 2))

    with z_1 = x_1, logdet = sum s, and (s_raw, t) = net(x_1) split in halves along dim 1. Two
    ways to feed the network, chosen by the mask's shape:
    - a mask over dim 1 only ((1, D) features, or (1, C, 1, 1) channels, C > 1: NICE's
      partition, Glow's channel split) splits x by index: `net` maps the n_1 features or
      channels where b = 1 to n_2 (additive) or 2 n_2 (affine) for the n_2 others;
    - any other mask (RealNVP's (1, 1, H, W) checkerboard) keeps x's shape: `net(b * x)` returns
      C or 2C channels, and the parameters are multiplied by (1 - b).
    The network's last layer should start at zero so that the layer starts as the identity
    (Glow's form then starts as a scaling by sigmoid(2)).
    """

    def __init__(
        self,
        mask: torch.Tensor,
        net: nn.Module,
        kind: Literal["additive", "realnvp", "glow"] = "realnvp",
        channels: int | None = None,
    ) -> None:
        super().__init__()
        if kind not in ("additive", "realnvp", "glow"):
            raise ValueError(f"coupling kind must be additive, realnvp or glow, got {kind!r}")
        self.kind, self.net = kind, net
        self.register_buffer("mask", mask)
        self.split = mask.shape[1] > 1 and all(n == 1 for i, n in enumerate(mask.shape) if i != 1)
        if self.split:
            passing = mask.flatten().bool()
            self.register_buffer("passing", passing.nonzero().squeeze(1), persistent=False)
            self.register_buffer("moving", (~passing).nonzero().squeeze(1), persistent=False)
            scales = len(self.moving)
        else:
            self.register_buffer("keep", 1 - mask, persistent=False)
            scales = channels or mask.shape[1]
        if kind == "realnvp":
            self.scale = nn.Parameter(torch.ones(scales))

    def _params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-scale s, shift t) in float32: the shape of the moving part (split), or x's shape
        with zeros where b = 1 (masked)."""
        out = upcast(self.net(x.index_select(1, self.passing) if self.split else x * self.mask.to(x.dtype)))
        if self.kind == "additive":
            s, t = torch.zeros_like(out), out
        else:
            s_raw, t = out.chunk(2, dim=1)
            if self.kind == "realnvp":
                s = _channel_view(self.scale, s_raw) * torch.tanh(s_raw)
            else:
                s = F.logsigmoid(s_raw + 2.0)
        return (s, t) if self.split else (s * self.keep, t * self.keep)

    def _moved(self, x: torch.Tensor, s: torch.Tensor, t: torch.Tensor, inverse: bool) -> torch.Tensor:
        if self.kind == "glow":
            return x * (-s).exp() - t if inverse else (x + t) * s.exp()
        return (x - t) * (-s).exp() if inverse else x * s.exp() + t

    def _couple(self, x: torch.Tensor, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        s, t = self._params(x)  # inverse: the passing part of z is that of x, so s, t are the same
        x = upcast(x)
        if not self.split:
            return self._moved(x, s, t, inverse), s
        moved = self._moved(x.index_select(1, self.moving), s, t, inverse)
        return x.index_copy(1, self.moving, moved), s

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z, s = self._couple(x, inverse=False)
        return z, _sum_per_example(s)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return self._couple(z, inverse=True)[0]


class DiagonalScaling(FlowLayer):
    """NICE's last layer, z = x * exp(s) with one learned s per feature; logdet = sum s."""

    def __init__(self, shape: Shape) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(shape))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = upcast(x) * self.log_scale.exp()
        return z, self.log_scale.sum().expand(len(x))

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return upcast(z) * (-self.log_scale).exp()


# ------------------------------------------------------------------ Glow's step
class ActNorm(FlowLayer):
    """Per-channel affine z = (x + b) * exp(log_s); logdet = H * W * sum log_s (Glow, eq. in
    Table 1). The first forward pass in training mode sets b and log_s from that batch so that
    z has zero mean and unit variance per channel (data-dependent initialization); the flag is
    a buffer, so a loaded model is not initialized again."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.bias = nn.Parameter(torch.zeros(channels))
        self.log_scale = nn.Parameter(torch.zeros(channels))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        dims = (0, *range(2, x.ndim))
        self.bias.copy_(-x.mean(dim=dims))
        self.log_scale.copy_(-(x.std(dim=dims, unbiased=False) + self.eps).log())
        self.initialized.fill_(True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = upcast(x)
        if self.training and not self.initialized:
            self.initialize(x)
        z = (x + _channel_view(self.bias, x)) * _channel_view(self.log_scale, x).exp()
        return z, (self.log_scale.sum() * _positions(x)).expand(len(x))

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        z = upcast(z)
        return z * _channel_view(-self.log_scale, z).exp() - _channel_view(self.bias, z)


class InvertibleConv1x1(FlowLayer):
    """z = W x at every position, W (C, C); logdet = H * W_spatial * log |det W| (Glow).

    LU-parameterized (default): W = P L (U + diag(sign * exp(log_s))) with P a fixed permutation,
    L unit lower-triangular and U strictly upper-triangular, so log |det W| = sum log_s costs O(C)
    instead of O(C^3). W starts as a random rotation. lu=False learns W itself and uses slogdet.
    """

    def __init__(self, channels: int, lu: bool = True, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.lu = lu
        rotation = torch.linalg.qr(torch.randn(channels, channels, generator=generator))[0]
        if not lu:
            self.weight_param = nn.Parameter(rotation)
            return
        p, lower, upper = torch.linalg.lu(rotation)
        diagonal = upper.diagonal()
        self.register_buffer("permutation", p)
        self.register_buffer("sign", diagonal.sign())
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), -1))
        self.lower = nn.Parameter(lower)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_s = nn.Parameter(diagonal.abs().log())

    def weight(self) -> torch.Tensor:
        """W (C, C) in float32."""
        if not self.lu:
            return upcast(self.weight_param)
        eye = torch.eye(len(self.log_s), device=self.log_s.device)
        lower = self.lower * self.lower_mask + eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign * self.log_s.exp())
        return self.permutation @ lower @ upper

    def log_abs_det(self) -> torch.Tensor:
        return self.log_s.sum() if self.lu else torch.linalg.slogdet(upcast(self.weight_param))[1]

    @staticmethod
    def _mix(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return torch.einsum("oc,bc...->bo...", weight.to(x.dtype), x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = upcast(x)
        return self._mix(self.weight(), x), (self.log_abs_det() * _positions(x)).expand(len(x))

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        z = upcast(z)
        return self._mix(torch.linalg.inv(self.weight()), z)


# ------------------------------------------------------------------ reshaping and preprocessing
class Squeeze(FlowLayer):
    """(B, C, H, W) -> (B, 4C, H/2, W/2): each 2x2 patch becomes 4 channels; logdet 0.
    Channel c * 4 + 2 * di + dj holds x[c, 2i + di, 2j + dj] (Glow's ordering)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, h, w = x.shape
        if h % 2 or w % 2:
            raise ValueError(f"Squeeze needs even height and width, got {h}x{w}")
        z = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, 4 * c, h // 2, w // 2)
        return z, upcast(x).new_zeros(b)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        b, c, h, w = z.shape
        return z.view(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c // 4, 2 * h, 2 * w)

    def out_shape(self, shape: Shape) -> Shape:
        c, h, w = shape
        return (4 * c, h // 2, w // 2)


class LogitTransform(FlowLayer):
    """RealNVP's preprocessing of x in (0, 1):  p = alpha + (1 - 2 alpha) x,  z = log p - log(1 - p),
    logdet = sum [log(1 - 2 alpha) - log p - log(1 - p)]. alpha keeps z finite at 0 and 1."""

    def __init__(self, alpha: float = 0.05) -> None:
        super().__init__()
        if not 0 <= alpha < 0.5:
            raise ValueError(f"logit alpha must be in [0, 0.5), got {alpha}")
        self.alpha = alpha

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.alpha + (1 - 2 * self.alpha) * upcast(x)
        z = p.log() - (-p).log1p()
        logdet = math.log(1 - 2 * self.alpha) - p.log() - (-p).log1p()
        return z, _sum_per_example(logdet)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return (torch.sigmoid(upcast(z)) - self.alpha) / (1 - 2 * self.alpha)


class Shift(FlowLayer):
    """z = x + c (Glow centres x in [0, 1] with c = -0.5); logdet 0."""

    def __init__(self, shift: float) -> None:
        super().__init__()
        self.shift = shift

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return upcast(x) + self.shift, upcast(x).new_zeros(len(x))

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return upcast(z) - self.shift


# ------------------------------------------------------------------ composition
class FlowSequence(FlowLayer):
    """f_K o ... o f_1: logdets add; the inverse runs the layers backwards."""

    def __init__(self, layers: Sequence[FlowLayer]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = upcast(x).new_zeros(len(x))
        for layer in self.layers:
            x, ld = layer(x)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        for layer in reversed(self.layers):
            z = layer.inverse(z)
        return z

    def out_shape(self, shape: Shape) -> Shape:
        for layer in self.layers:
            shape = layer.out_shape(shape)
        return shape


class MultiScale(FlowLayer):
    """RealNVP's multi-scale architecture: after each of `levels`, half of the channels are
    factored out (they go straight to the latent, modelled by the prior) and the next level
    transforms only the other half; `final` transforms what is left. The latent is every
    factored-out part and the final output, flattened and concatenated: (B, D), D = C * H * W.

    input (C, H, W) -> level 0 -> (C0, H0, W0): (C0/2, ...) out, (C0/2, ...) on -> level 1 -> ...
    """

    def __init__(self, shape: Shape, levels: Sequence[FlowLayer], final: FlowLayer) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.levels, self.final = nn.ModuleList(levels), final
        self.factored: list[Shape] = []
        for level in self.levels:
            c, *spatial = level.out_shape(shape)
            if c % 2:
                raise ValueError(f"a level's output must have an even number of channels, got {c}")
            self.factored.append((c // 2, *spatial))
            shape = (c - c // 2, *spatial)
        self.factored.append(final.out_shape(shape))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        parts, logdet = [], upcast(x).new_zeros(len(x))
        for level in self.levels:
            x, ld = level(x)
            out, x = x.chunk(2, dim=1)
            parts.append(out.flatten(1))
            logdet = logdet + ld
        x, ld = self.final(x)
        parts.append(x.flatten(1))
        return torch.cat(parts, dim=1), logdet + ld

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        sizes = [math.prod(s) for s in self.factored]
        parts = [p.view(len(z), *s) for p, s in zip(z.split(sizes, dim=1), self.factored, strict=True)]
        x = self.final.inverse(parts[-1])
        for level, out in zip(reversed(self.levels), reversed(parts[:-1]), strict=True):
            x = level.inverse(torch.cat([out, x], dim=1))
        return x

    def out_shape(self, shape: Shape) -> Shape:
        return (sum(math.prod(s) for s in self.factored),)


# ------------------------------------------------------------------ priors
def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed per example: -1/2 sum (z^2 + log 2 pi)."""
    return -0.5 * _sum_per_example(upcast(z).square() + math.log(2 * math.pi))


def standard_logistic_log_prob(z: torch.Tensor) -> torch.Tensor:
    """NICE's prior, log p(z) = -sum [softplus(z) + softplus(-z)] per example."""
    z = upcast(z)
    return -_sum_per_example(F.softplus(z) + F.softplus(-z))


def sample_standard_logistic(
    shape: Shape,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """z = log u - log(1 - u), u ~ U(0, 1): the inverse CDF of the standard logistic."""
    u = rand(shape, generator, device, dtype).clamp(1e-7, 1 - 1e-7)
    return u.log() - (-u).log1p()
