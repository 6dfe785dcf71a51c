"""Normalizing flows on dequantized 28x28 images: NICE (Dinh et al., 2015), RealNVP (Dinh et al.,
2017) and Glow (Kingma & Dhariwal, 2018), built from the layers of `deepzoo.nn.flows`.

Data: x (B, 1, 28, 28) with values k / 255, k in {0..255}. Dequantization turns the integers into
a continuous y = (k + u) / 256 in [0, 1), u in [0, 1)^D, and

    log P(k) >= E_q [log p(y) - log q(u | k)] - D log 256

(uniform q: log q = 0, and the bound is the usual "log p(y) - D log 256"; variational q: a
per-pixel logit-normal u = sigmoid(mu(k) + sigma(k) eps) learned with the flow, Ho et al. 2019).
The loss is the negative bound in bits per dimension, -bound / (D log 2).

- nice:    y flattened to (B, 784); `depth` additive couplings on alternating odd/even features,
           each an MLP with `blocks` hidden layers of `hidden` units; a diagonal scaling; logistic
           prior (the paper: 4 couplings, 5 x 1000 units).
- realnvp: logit(alpha + (1 - 2 alpha) y) first; per scale: `depth` checkerboard affine couplings,
           squeeze, `depth` channel-wise couplings, factor out half; then depth + 1 checkerboard
           couplings. Coupling networks are ResNets (`blocks` blocks of `hidden` channels). N(0, I) prior.
- glow:    y - 1/2 first; per level: squeeze, `depth` steps of (ActNorm, LU 1x1 convolution, affine
           coupling on half the channels), factor out half (not after the last level). N(0, I)
           prior. Where the paper differs: its factored-out halves get a learned conditional
           prior; here they are N(0, I) as in RealNVP.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from deepzoo.config import Range, ranged
from deepzoo.nn.flows import (
    ActNorm,
    Coupling,
    DiagonalScaling,
    FlowLayer,
    FlowSequence,
    InvertibleConv1x1,
    LogitTransform,
    MultiScale,
    Shift,
    Squeeze,
    alternating_mask,
    channel_mask,
    checkerboard_mask,
    sample_standard_logistic,
    standard_logistic_log_prob,
    standard_normal_log_prob,
)
from deepzoo.nn.precision import compute_dtype, upcast
from deepzoo.rng import rand, randn

IMAGE_SHAPE = (1, 28, 28)
LEVELS = 256


LogitAlpha = ranged(float, Range(0, 0.5, low_open=True, high_open=True))


@dataclass(frozen=True)
class FlowConfig:
    kind: Literal["nice", "realnvp", "glow"] = "realnvp"
    depth: int = 3
    """nice: additive couplings; realnvp: couplings of each kind per scale; glow: steps per level."""
    hidden: int = 64
    """nice: units per hidden layer; realnvp/glow: channels of the coupling networks."""
    blocks: int = 2
    """nice: hidden layers per coupling MLP; realnvp: residual blocks per coupling network."""
    scales: int = 2
    """realnvp: scales with a factor-out (then the final couplings); glow: levels (>= 1)."""
    preprocess: Literal["default", "logit", "center", "none"] = "default"
    """What y in [0, 1] goes through first: logit(alpha + (1 - 2 alpha) y), y - 1/2, or nothing;
    default: each paper's choice (nice: none, realnvp: logit, glow: center)."""
    logit_alpha: LogitAlpha = 1e-6
    """alpha of the logit preprocessing (1e-6 for MNIST as in MAF and FFJORD; RealNVP used 0.05 on
    natural images)."""
    dequantization: Literal["uniform", "variational"] = "uniform"
    image_shape: tuple[int, int, int] = IMAGE_SHAPE

    def __post_init__(self) -> None:
        if self.kind not in ("nice", "realnvp", "glow"):
            raise ValueError(f"flow kind must be nice, realnvp or glow, got {self.kind!r}")
        if self.preprocess not in ("default", "logit", "center", "none"):
            raise ValueError(f"preprocess must be default, logit, center or none, got {self.preprocess!r}")
        if self.dequantization not in ("uniform", "variational"):
            raise ValueError(f"dequantization must be uniform or variational, got {self.dequantization!r}")
        if min(self.depth, self.hidden, self.blocks, self.scales) < 1:
            raise ValueError("depth, hidden, blocks and scales must all be >= 1")
        _, h, w = self.image_shape
        if self.kind != "nice" and (h % 2**self.scales or w % 2**self.scales):
            raise ValueError(
                f"{self.kind} with {self.scales} scales needs H, W divisible by {2**self.scales}"
            )


# ------------------------------------------------------------------ coupling networks
def _zero_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    """The last layer of a coupling network: starts at zero, so the coupling starts as identity."""
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def nice_mlp(d_in: int, hidden: int, layers: int, d_out: int) -> nn.Sequential:
    """d_in -> hidden (ReLU) x layers -> d_out, the last layer zero."""
    sizes = [d_in] + [hidden] * layers
    modules: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        modules += [nn.Linear(a, b), nn.ReLU()]
    last = nn.Linear(hidden, d_out)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(*modules, last)


class ResNetConditioner(nn.Module):
    """RealNVP's s, t network: conv3x3 to `hidden`, `blocks` residual blocks
    h <- h + conv3x3(relu(conv3x3(relu(h)))), relu, zero conv3x3 to `out`.
    (B, C_in, H, W) -> (B, out, H, W)."""

    def __init__(self, channels: int, hidden: int, blocks: int, out: int) -> None:
        super().__init__()
        self.inp = nn.Conv2d(channels, hidden, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.ReLU(),
                nn.Conv2d(hidden, hidden, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(hidden, hidden, 3, padding=1),
            )
            for _ in range(blocks)
        )
        self.out = _zero_conv(hidden, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h)
        return self.out(F.relu(h))


def glow_conditioner(channels: int, hidden: int, out: int) -> nn.Sequential:
    """Glow's NN(): conv3x3, ReLU, conv1x1, ReLU, zero conv3x3 to `out` channels."""
    return nn.Sequential(
        nn.Conv2d(channels, hidden, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(hidden, hidden, 1),
        nn.ReLU(),
        _zero_conv(hidden, out),
    )


# ------------------------------------------------------------------ the three architectures
def build_nice(config: FlowConfig) -> FlowLayer:
    dim = math.prod(config.image_shape)
    couplings: list[FlowLayer] = []
    for i in range(config.depth):  # split: the passing half in, the shift of the other half out
        mask = alternating_mask(dim, i % 2)
        passing = int(mask.sum())
        net = nice_mlp(passing, config.hidden, config.blocks, dim - passing)
        couplings.append(Coupling(mask, net, "additive"))
    return FlowSequence([*couplings, DiagonalScaling((dim,))])


def _realnvp_couplings(
    shape: tuple[int, int, int], count: int, kind: str, config: FlowConfig
) -> list[FlowLayer]:
    c, h, w = shape
    if kind == "checkerboard":  # masked: the network sees b * x and returns s, t for every pixel
        return [
            Coupling(
                checkerboard_mask(h, w, i % 2),
                ResNetConditioner(c, config.hidden, config.blocks, 2 * c),
                "realnvp",
                c,
            )
            for i in range(count)
        ]
    return [  # split: half the channels in, s and t of the other half out
        Coupling(
            channel_mask(c, i % 2), ResNetConditioner(c // 2, config.hidden, config.blocks, c), "realnvp"
        )
        for i in range(count)
    ]


def build_realnvp(config: FlowConfig) -> FlowLayer:
    shape, levels = config.image_shape, []
    for _ in range(config.scales):
        c, h, w = shape
        level = _realnvp_couplings(shape, config.depth, "checkerboard", config) + [Squeeze()]
        level += _realnvp_couplings((4 * c, h // 2, w // 2), config.depth, "channel", config)
        levels.append(FlowSequence(level))
        shape = (2 * c, h // 2, w // 2)
    final = FlowSequence(_realnvp_couplings(shape, config.depth + 1, "checkerboard", config))
    return MultiScale(config.image_shape, levels, final)


def _glow_level(channels: int, config: FlowConfig) -> FlowSequence:
    """Squeeze, then `depth` steps on 4 * channels."""
    c = 4 * channels
    steps: list[FlowLayer] = [Squeeze()]
    for _ in range(config.depth):
        steps += [
            ActNorm(c),
            InvertibleConv1x1(c),
            Coupling(channel_mask(c, 1), glow_conditioner(c // 2, config.hidden, c), "glow"),
        ]
    return FlowSequence(steps)


def build_glow(config: FlowConfig) -> FlowLayer:
    channels, levels = config.image_shape[0], []
    for _ in range(config.scales - 1):
        levels.append(_glow_level(channels, config))
        channels = 2 * channels
    return MultiScale(config.image_shape, levels, _glow_level(channels, config))


BUILDERS = {"nice": build_nice, "realnvp": build_realnvp, "glow": build_glow}
PAPER_PREPROCESSING = {"nice": "none", "realnvp": "logit", "glow": "center"}


def preprocessing(config: FlowConfig) -> list[FlowLayer]:
    """The layers that map y in [0, 1] to the flow's input (empty for "none")."""
    kind = PAPER_PREPROCESSING[config.kind] if config.preprocess == "default" else config.preprocess
    return {"logit": [LogitTransform(config.logit_alpha)], "center": [Shift(-0.5)], "none": []}[kind]


# ------------------------------------------------------------------ dequantization
class VariationalDequantizer(nn.Module):
    """q(u | k) per pixel: u = sigmoid(v), v = mu + sigma * eps, eps ~ N(0, 1), with (mu, log sigma)
    from a small conv net of k / 255 - 1/2 (zero last layer: q starts as logit-normal(0, 1)).

        log q(u | k) = log N(eps) - log sigma - log sigmoid(v) - log sigmoid(-v)   (summed per image)
    """

    def __init__(self, channels: int, hidden: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(),
            _zero_conv(hidden, 2 * channels),
        )  # fmt: skip

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x: k / 255 -> (u in (0, 1), log q(u | k) per image)."""
        out = self.net(x - 0.5)
        mu, log_sigma = upcast(out).chunk(2, dim=1)
        eps = randn(tuple(x.shape), generator, x.device, mu.dtype)
        v = mu + log_sigma.exp() * eps
        log_q = -0.5 * (eps.square() + math.log(2 * math.pi)) - log_sigma - F.logsigmoid(v) - F.logsigmoid(-v)
        return torch.sigmoid(v), log_q.flatten(1).sum(1)


class Flow(nn.Module):
    """A normalizing flow f on dequantized images with prior p_Z: log p(y) = log p_Z(f(y)) + logdet."""

    def __init__(self, config: FlowConfig) -> None:
        super().__init__()
        self.config = config
        self.dims = math.prod(config.image_shape)
        self.flow = FlowSequence([*preprocessing(config), BUILDERS[config.kind](config)])
        self.dequantizer = (
            VariationalDequantizer(config.image_shape[0]) if config.dequantization == "variational" else None
        )

    def _flat(self, y: torch.Tensor) -> torch.Tensor:
        return y.flatten(1) if self.config.kind == "nice" else y

    def prior_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        if self.config.kind == "nice":
            return standard_logistic_log_prob(z)
        return standard_normal_log_prob(z)

    def log_prob(self, y: torch.Tensor) -> torch.Tensor:
        """log p(y) in nats per image of continuous y (B, C, H, W) in (0, 1), shape (B,)."""
        z, logdet = self.flow(self._flat(y))
        return self.prior_log_prob(z) + logdet

    def dequantize(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x = k / 255 -> (y = (k + u) / 256, log q(u | k) per image; 0 for uniform u)."""
        x = upcast(x)
        k = (x * (LEVELS - 1)).round()
        if self.dequantizer is None:
            u = rand(tuple(x.shape), generator, x.device, x.dtype)
            return (k + u) / LEVELS, x.new_zeros(len(x))
        u, log_q = self.dequantizer(k / (LEVELS - 1), generator)
        return (k + u) / LEVELS, log_q

    def nll_bits(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """-(log p(y) - log q(u | k) - D log 256) / (D log 2): bits per dimension per image (B,),
        an upper bound (in expectation over u) of the discrete data's -log2 P(k) / D."""
        y, log_q = self.dequantize(x, generator)
        nats = -(self.log_prob(y) - log_q - self.dims * math.log(LEVELS))
        return nats / (self.dims * math.log(2))

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        bits = self.nll_bits(batch["x"])
        return {"loss": bits.mean(), "bpd": bits.mean().detach()}

    @torch.no_grad()
    def sample(
        self, n: int, *, generator: torch.Generator | None = None, temperature: float = 1.0
    ) -> torch.Tensor:
        """n images f^-1(z) in [0, 1], z drawn from the prior (a normal prior scaled by `temperature`)."""
        weight = next(self.parameters())  # a float64 model samples in float64, any other in float32
        device, dtype = weight.device, compute_dtype(weight.dtype)
        if self.config.kind == "nice":
            z = sample_standard_logistic((n, self.dims), generator, device, dtype)
        else:
            z = temperature * randn((n, self.dims), generator, device, dtype)
        return self.flow.inverse(z).view(n, *self.config.image_shape).clamp(0, 1)
