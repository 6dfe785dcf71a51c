"""A small U-Net for diffusion on small images (after Ho et al., 2020, with the additions of
Dhariwal & Nichol, 2021: scale-shift time conditioning, attention at low resolution).

x (B, C, H, W), time c (B,) (any real: step index, flow time or ln(sigma)/4), labels (B,) or None
-> (B, C, H, W). The time goes through sinusoidal features and an MLP to an embedding e; a label
embedding (num_classes + 1 rows, the last one "no label" for classifier-free guidance) is added
to e. Each residual block: h = conv(silu(GN(x))); h = GN(h) (1 + scale) + shift with
(scale, shift) = Linear(silu(e)); out = x' + conv(dropout(silu(h))), x' = x or its 1x1 conv when
the width changes. H and W must be divisible by 2^(levels - 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from deepzoo.config import Count, Index, Rate, Sizes
from deepzoo.nn.attention import MultiHeadAttention
from deepzoo.nn.positions import check_heads, sinusoidal_features


@dataclass(frozen=True)
class UNetConfig:
    in_channels: Count = 1
    """Image channels."""
    channels: Sizes = (32, 64, 128)
    """Width at each resolution level (each level halves H and W)."""
    blocks: Count = 1
    """Residual blocks per level on the way down (one more on the way up)."""
    attention_levels: tuple[int, ...] = (2,)
    """Levels (0 = full resolution) with self-attention after each block."""
    heads: Count = 4
    """Attention heads at the attention levels."""
    num_classes: Index = 0
    """> 0: class-conditional, with a learned null label for guidance."""
    dropout: Rate = 0.0
    """Dropout inside the residual blocks."""

    def __post_init__(self) -> None:
        n = len(self.channels)
        if not all(0 <= level < n for level in self.attention_levels):
            raise ValueError(f"attention_levels must be levels in [0, {n}), got {self.attention_levels}")
        for level in self.attention_levels:
            check_heads(self.channels[level], self.heads, rope=False, names=(f"channels[{level}]", "heads"))


class GroupNorm(nn.GroupNorm):
    """GroupNorm in the input's dtype: under bf16 autocast, torch's own runs in fp32 and the casts
    to and from it cost a fifth of a CPU training step here (the kernel accumulates in fp32)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return F.group_norm(x, self.num_groups, self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)


def _norm(channels: int) -> GroupNorm:
    return GroupNorm(min(8, channels), channels)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2, self.conv2 = _norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.drop = nn.Dropout(dropout)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(self.drop(F.silu(h)))


class AttentionBlock(nn.Module):
    """x + attention over the H*W positions of GN(x)."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.norm = _norm(channels)
        self.attention = MultiHeadAttention(channels, heads)
        nn.init.zeros_(self.attention.out_proj.weight)
        nn.init.zeros_(self.attention.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        return x + self.attention(tokens).transpose(1, 2).reshape(b, c, h, w)


class Level(nn.Module):
    """Residual blocks, each followed by attention where asked."""

    def __init__(
        self, widths: list[tuple[int, int]], emb_dim: int, attention: bool, heads: int, dropout: float
    ):
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(a, b, emb_dim, dropout) for a, b in widths)
        self.attention = nn.ModuleList(
            AttentionBlock(b, heads) if attention else nn.Identity() for _, b in widths
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for block, attend in zip(self.blocks, self.attention):
            x = attend(block(x, emb))
        return x


class UNet(nn.Module):
    """Down: per level, `blocks` residual blocks, keep the result as the level's skip, halve.
    Up: per level, concatenate the skip, blocks + 1 residual blocks, double (conv to the next
    level's width)."""

    def __init__(self, config: UNetConfig = UNetConfig()) -> None:
        super().__init__()
        self.config = c = config
        base, chs = c.channels[0], c.channels
        emb_dim = 4 * base
        self.time_mlp = nn.Sequential(nn.Linear(base, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_emb = nn.Embedding(c.num_classes + 1, emb_dim) if c.num_classes else None
        self.stem = nn.Conv2d(c.in_channels, base, 3, padding=1)

        def level(widths: list[tuple[int, int]], i: int) -> Level:
            return Level(widths, emb_dim, i in c.attention_levels, c.heads, c.dropout)

        widths_in = [base, *chs[:-1]]
        self.down = nn.ModuleList(
            level([(widths_in[i] if j == 0 else ch, ch) for j in range(c.blocks)], i)
            for i, ch in enumerate(chs)
        )
        self.downsample = nn.ModuleList(nn.Conv2d(ch, ch, 3, stride=2, padding=1) for ch in chs[:-1])
        self.middle = Level([(chs[-1], chs[-1])] * 2, emb_dim, True, c.heads, c.dropout)
        self.up = nn.ModuleList(
            level([(2 * ch, ch)] + [(ch, ch)] * c.blocks, i) for i, ch in reversed(list(enumerate(chs)))
        )
        self.upsample = nn.ModuleList(
            nn.Sequential(
                nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(chs[i], chs[i - 1], 3, padding=1)
            )
            for i in reversed(range(1, len(chs)))
        )
        self.out = nn.Sequential(_norm(base), nn.SiLU(), nn.Conv2d(base, c.in_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def embedding(self, time: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """(B, 4 C_0): MLP(sinusoidal(time)) + label embedding (the null row when labels is None)."""
        emb = self.time_mlp(sinusoidal_features(time, self.config.channels[0]))
        if self.label_emb is not None:
            if labels is None:
                labels = torch.full((len(time),), self.config.num_classes, device=time.device)
            emb = emb + self.label_emb(labels)
        return emb

    def forward(
        self, x: torch.Tensor, time: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        factor = 2 ** (len(self.config.channels) - 1)
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(f"H and W must be divisible by {factor}, got {tuple(x.shape[-2:])}")
        emb = self.embedding(time.expand(len(x)) if time.ndim == 0 else time, labels)
        h = self.stem(x)
        skips = []
        for i, level in enumerate(self.down):
            h = level(h, emb)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        h = self.middle(h, emb)
        for i, level in enumerate(self.up):
            h = level(torch.cat([h, skips.pop()], dim=1), emb)
            if i < len(self.upsample):
                h = self.upsample[i](h)
        return self.out(h)
