"""Autoregressive models of binary 28x28 images: PixelCNN and PixelRNN's Row LSTM (van den Oord et
al., 2016a) and Gated PixelCNN (van den Oord et al., 2016b).

    log p(x) = sum_{i, j in raster order} log Bernoulli(x_ij; sigmoid(logit_ij(x_<ij)))

x: (B, 1, 28, 28) in {0, 1}; one network pass gives every logit at once (training and likelihood
are parallel); sampling draws one pixel at a time. Training binarizes the grey-level images
afresh at every step (x ~ Bernoulli(grey level)); evaluation takes binary images.

- pixelcnn:  7x7 type-A masked convolution, `layers` residual blocks (ReLU, 1x1, ReLU, 3x3 type B,
             ReLU, 1x1), then ReLU, 1x1, ReLU, 1x1 to one logit. Has the blind spot of stacked
             masked convolutions: pixels up and to the right beyond the diagonal are never seen.
- gated:     `layers` gated layers with vertical and horizontal stacks (no blind spot), optional
             class conditioning, the same output head.
- pixelrnn:  7x7 type-A masked convolution, `layers` residual Row LSTM layers, the same head.

Sampling caches what does not change: Gated PixelCNN's vertical stack depends only on finished
rows, so it runs once per row and the horizontal stack once per pixel on the current row up to
the current column; the Row LSTM keeps each layer's state of the previous row and runs one row
step per pixel; the plain PixelCNN runs on the rows within its receptive field only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from deepzoo.config import Count, Index
from deepzoo.nn.masked import GatedLayer, MaskedConv2d, RowLSTM
from deepzoo.nn.precision import upcast
from deepzoo.rng import rand

IMAGE_SHAPE = (1, 28, 28)


@dataclass(frozen=True)
class PixelCNNConfig:
    kind: Literal["pixelcnn", "gated", "pixelrnn"] = "pixelcnn"
    hidden: int = 64
    """Channels of the residual stream (pixelcnn), of each stack (gated), of the LSTM state (pixelrnn)."""
    layers: int = 7
    """Residual blocks (pixelcnn), gated layers (gated), Row LSTM layers (pixelrnn)."""
    kernel: Count = 3
    """Width of the masked (pixelcnn) or stacked (gated) kernels and of the Row LSTM's input-to-state."""
    num_classes: Index = 0
    """gated: > 0 conditions every layer on a label embedding (p(x | y))."""
    image_shape: tuple[int, int, int] = IMAGE_SHAPE

    def __post_init__(self) -> None:
        if self.kind not in ("pixelcnn", "gated", "pixelrnn"):
            raise ValueError(f"kind must be pixelcnn, gated or pixelrnn, got {self.kind!r}")
        if self.num_classes and self.kind != "gated":
            raise ValueError("class conditioning is built for kind 'gated' only")
        if self.kernel % 2 == 0 or self.layers < 1 or self.hidden < 2:
            raise ValueError("need an odd kernel, layers >= 1 and hidden >= 2")


def _head(hidden: int, out: int) -> nn.Sequential:
    """ReLU, 1x1, ReLU, 1x1: per-pixel logits from the last features."""
    return nn.Sequential(nn.ReLU(), nn.Conv2d(hidden, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, out, 1))


class _MaskedResidual(nn.Module):
    """x + 1x1(ReLU(3x3_B(ReLU(1x1(ReLU(x)))))), narrowing to hidden / 2 inside."""

    def __init__(self, hidden: int, kernel: int) -> None:
        super().__init__()
        inner = hidden // 2
        self.body = nn.Sequential(
            nn.ReLU(), nn.Conv2d(hidden, inner, 1),
            nn.ReLU(), MaskedConv2d(inner, inner, kernel, "B"),
            nn.ReLU(), nn.Conv2d(inner, hidden, 1),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class PixelCNN(nn.Module):
    """The three autoregressive models behind one interface: logits, log_prob, loss, sample."""

    def __init__(self, config: PixelCNNConfig) -> None:
        super().__init__()
        self.config = config
        c, k, channels = config.hidden, config.kernel, config.image_shape[0]
        if config.kind == "gated":
            self.layers = nn.ModuleList(
                GatedLayer(channels if i == 0 else c, c, k, first=i == 0, num_classes=config.num_classes)
                for i in range(config.layers)
            )
        else:
            self.input = MaskedConv2d(channels, c, 7, "A")
            if config.kind == "pixelcnn":
                self.layers = nn.ModuleList(_MaskedResidual(c, k) for _ in range(config.layers))
            else:
                self.layers = nn.ModuleList(RowLSTM(c, c, k) for _ in range(config.layers))
        self.head = _head(c, channels)
        if config.kind != "pixelrnn":
            self.to(memory_format=torch.channels_last)  # oneDNN's convolutions run faster in NHWC

    @property
    def conditional(self) -> bool:
        return self.config.num_classes > 0

    @property
    def receptive_rows(self) -> int:
        """How many rows above its own a plain PixelCNN's output row sees: 3 (7x7) + k//2 per block."""
        return 3 + self.config.layers * (self.config.kernel // 2)

    # ------------------------------------------------------------------ parallel pass
    def logits(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, 1, H, W) -> logits (B, 1, H, W); logit (i, j) depends on x only before (i, j)."""
        x = x.contiguous(memory_format=torch.channels_last)
        if self.config.kind == "gated":
            v = h = x
            for layer in self.layers:
                v, h = layer(v, h, y)
            return self.head(h)
        h = self.input(x)
        for layer in self.layers:
            h = h + layer(h) if self.config.kind == "pixelrnn" else layer(h)
        return self.head(h)

    def log_prob(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x) in nats per image (B,), x binary."""
        logits = upcast(self.logits(x, y))
        return (
            -F.binary_cross_entropy_with_logits(logits, x.to(logits.dtype), reduction="none")
            .flatten(1)
            .sum(1)
        )

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Mean -log p(x) in nats per image; training draws x ~ Bernoulli(grey levels) every step."""
        x = batch["x"]
        if self.training:
            x = torch.bernoulli(x)
        elif not torch.all((x == 0) | (x == 1)):
            raise ValueError("evaluation needs binary images (binarize the evaluation split once)")
        nll = -self.log_prob(x, batch.get("y") if self.conditional else None)
        return {"loss": nll.mean(), "nll": nll.mean().detach()}

    # ------------------------------------------------------------------ one pixel at a time
    def _cached_logit(
        self, x: torch.Tensor, y: torch.Tensor | None, i: int, j: int, cache: dict[str, Any]
    ) -> torch.Tensor:
        """logit (B,) of pixel (i, j) of the partly drawn x, reusing `cache` (filled in raster order)."""
        kind = self.config.kind
        if kind == "pixelcnn":  # only the rows the output row can see
            top = max(0, i - self.receptive_rows)
            return self.logits(x[:, :, top : i + 1])[:, 0, -1, j]
        if kind == "gated":
            if j == 0:  # rows < i are final: run the vertical stack once for the row
                cache["links"], v = [], x[:, :, :i]
                for layer in self.layers:
                    if i == 0:
                        width = x.shape[-1]
                        last = x.new_zeros(len(x), layer.link.in_channels, 1, width)
                    else:
                        v_pre = layer.vertical(v)
                        last, v = v_pre[:, :, -1:], layer.vertical_out(v_pre, y)
                    cache["links"].append(layer.link(last))
            h = x[:, :, i : i + 1, : j + 1]
            for layer, link in zip(self.layers, cache["links"], strict=True):
                h = layer.horizontal(h, link[..., : j + 1], y)
            return self.head(h)[:, 0, 0, j]
        # pixelrnn: the states of row i - 1 are final once row i starts
        if j == 0:
            cache["above"] = cache.get("row", [layer.initial_state(x[:, 0]) for layer in self.layers])
        features = self.input(x[:, :, max(0, i - 3) : i + 1])[:, :, -1:]  # (B, C, 1, W)
        cache["row"] = []
        for layer, state in zip(self.layers, cache["above"], strict=True):
            state = layer.step(layer.input_to_state(features)[:, :, 0], state)
            cache["row"].append(state)
            features = features + state[0].unsqueeze(2)
        return self.head(features)[:, 0, 0, j]

    @torch.no_grad()
    def sample_with_log_prob(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        labels: torch.Tensor | None = None,
        cache: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """n binary images drawn pixel by pixel in raster order, and log p of each as the draws
        accumulate it (B,). cache=False recomputes the whole network for every pixel."""
        weight = next(self.parameters())
        device = weight.device
        _, height, width = self.config.image_shape
        y = None
        if self.conditional:
            y = (labels if labels is not None else torch.arange(n) % self.config.num_classes).to(device)
        x = torch.zeros(n, *self.config.image_shape, device=device, dtype=weight.dtype)
        log_p = torch.zeros(n, device=device, dtype=torch.float64)
        state: dict[str, Any] = {}
        for i in range(height):
            for j in range(width):
                logit = self._cached_logit(x, y, i, j, state) if cache else self.logits(x, y)[:, 0, i, j]
                logit = upcast(logit)
                pixel = (rand((n,), generator, device) < torch.sigmoid(logit)).to(logit.dtype)
                x[:, 0, i, j] = pixel.to(x.dtype)
                log_p -= F.binary_cross_entropy_with_logits(logit, pixel, reduction="none")
        return x, log_p

    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        labels: torch.Tensor | None = None,
        cache: bool = True,
    ) -> torch.Tensor:
        """n binary images (B, 1, H, W); conditional models draw `labels` (default 0..9 repeating)."""
        return self.sample_with_log_prob(n, generator=generator, labels=labels, cache=cache)[0]
