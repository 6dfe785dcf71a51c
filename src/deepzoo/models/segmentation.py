"""Semantic segmentation networks: per-pixel class logits from an encoder-decoder.

x (B, C, H, W) -> logits (B, K, H, W); L = mean over pixels of the cross-entropy
-log softmax(logits)[y] (y (B, H, W) the class map, `ignore_index` pixels left out).
H and W must be divisible by 2^depth, depth = len(widths) - 1.

- "unet" (Ronneberger et al., 2015): each encoder level is two 3x3 conv-BN-ReLU then a 2x2
  max-pool; each decoder level upsamples with a learned 2x2 transposed convolution (stride 2),
  concatenates the encoder features of that resolution, and applies two 3x3 conv-BN-ReLU.
  (Padded convolutions, so the output keeps the input's size; the paper's were unpadded.)
- "unpool": an FCN whose decoder upsamples with max-unpooling (SegNet; Badrinarayanan et al.,
  2017): each 2x2 max-pool of the encoder remembers where its maxima were, and the decoder puts
  each value back at that position, zeros elsewhere, then refines with 3x3 conv-BN-ReLU; no skip
  features are concatenated, only the pooling switches travel.
A 1x1 convolution maps the last features to K logits. (The diffusion U-Net in nn/unet.py is a
different network: time-conditioned residual blocks.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from deepzoo.config import Count, Sizes
from deepzoo.nn.precision import upcast


@dataclass(frozen=True)
class SegmentationConfig:
    arch: Literal["unet", "unpool"] = "unet"
    """unet: transposed convolutions and skip concatenation; unpool: max-unpooling (SegNet)."""
    in_channels: Count = 1
    num_classes: Count = 11
    """Classes including the background (class 0 of MNIST scenes)."""
    widths: Sizes = (16, 32, 64, 128)
    """Channels at each resolution, full first; len(widths) - 1 2x downsamplings. (16, ..., 128)
    costs 1.37x (8, ..., 64)'s fp32 step on a CPU and the same in bf16 with AMX, and labels the
    digits far better (docs/detection.md)."""
    ignore_index: int = 255
    """Class-map value left out of the loss."""


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


def double_conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(conv_bn_relu(c_in, c_out), conv_bn_relu(c_out, c_out))


class SegmentationNet(nn.Module):
    def __init__(self, config: SegmentationConfig = SegmentationConfig()) -> None:
        super().__init__()
        self.config = config
        widths = list(config.widths)
        if len(widths) < 2:
            raise ValueError(f"need at least two widths (one downsampling), got {config.widths}")
        self.depth = len(widths) - 1
        self.down = nn.ModuleList(
            double_conv(c_in, c_out) for c_in, c_out in zip([config.in_channels] + widths[:-2], widths[:-1])
        )
        self.bottom = double_conv(widths[-2], widths[-1])
        if config.arch == "unet":
            self.upsample = nn.ModuleList(
                nn.ConvTranspose2d(hi, lo, 2, stride=2) for lo, hi in zip(widths[:-1], widths[1:])
            )
            self.up = nn.ModuleList(double_conv(2 * lo, lo) for lo in widths[:-1])
        elif config.arch == "unpool":
            self.upsample = nn.ModuleList(conv_bn_relu(hi, lo) for lo, hi in zip(widths[:-1], widths[1:]))
            self.up = nn.ModuleList(double_conv(lo, lo) for lo in widths[:-1])
        else:
            raise ValueError(f"arch must be 'unet' or 'unpool', got {config.arch!r}")
        self.head = nn.Conv2d(widths[0], config.num_classes, 1)
        self.to(memory_format=torch.channels_last)  # oneDNN's convolutions run faster in NHWC

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, K, H, W) logits."""
        step = 2**self.depth
        if x.shape[-1] % step or x.shape[-2] % step:
            raise ValueError(f"H and W must be divisible by {step}, got {tuple(x.shape[-2:])}")
        x = x.contiguous(memory_format=torch.channels_last)
        skips, switches = [], []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x, where = F.max_pool2d(x, 2, return_indices=True)
            switches.append(where)
        x = self.bottom(x)
        for level in reversed(range(self.depth)):
            if self.config.arch == "unet":
                x = self.up[level](torch.cat([self.upsample[level](x), skips[level]], 1))
            else:
                x = self.upsample[level](x)  # to the level's width, then back to the maxima's places
                x = self.up[level](F.max_unpool2d(x, switches[level], 2, output_size=skips[level].shape[-2:]))
        return self.head(x)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Pixelwise cross-entropy against batch["semantic"] (B, H, W); also pixel accuracy."""
        logits = self(batch["x"])
        target = batch["semantic"].long()
        loss = F.cross_entropy(upcast(logits), target, ignore_index=self.config.ignore_index)
        valid = target != self.config.ignore_index
        accuracy = ((logits.argmax(1) == target) & valid).sum() / valid.sum().clamp_min(1)
        return {"loss": loss, "pixel_accuracy": accuracy.detach()}

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, H, W) class map."""
        return self(x).argmax(1)
