"""Positional encodings: sinusoidal and learned (added to the input), rotary (applied to queries and
keys) and ALiBi (a bias on the attention scores).

- Sinusoidal (Vaswani et al., 2017): P[t, 2i] = sin(t w_i), P[t, 2i + 1] = cos(t w_i),
  w_i = 10000^(-2i / D).
- RoPE (Su et al., 2021, RoFormer): each pair (x_2i, x_2i+1) of a query or key at position m is
  rotated by the angle m theta_i, theta_i = base^(-2i / d). Then <R_m q, R_n k> = <q, R_{n-m} k>:
  the score depends on positions only through n - m, and rotations keep norms. GPT-NeoX and
  LLaMA pair (x_i, x_i+d/2) instead (`pairs="halves"`).
- ALiBi (Press et al., 2022): score(i, j) += -s_h |i - j| with head slopes s_h = 2^(-8h / H).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from deepzoo.nn.precision import compute_dtype


def check_heads(dim: int, heads: int, rope: bool, names: tuple[str, str] = ("dim", "heads")) -> None:
    """A config's check that `heads` splits the width `dim` into equal heads, of an even width
    when their queries and keys are rotated (RoPE); `names` are the config's fields for the two.
    Non-positive counts are left to the range check (`config.check_ranges`), which names them."""
    if heads < 1 or dim < 1:
        return
    dim_name, heads_name = names
    if dim % heads:
        raise ValueError(f"{heads_name} must be a divisor of {dim_name} ({dim}), got {heads}")
    if rope and (dim // heads) % 2:
        raise ValueError(
            f"{heads_name} must be such that {dim_name} / {heads_name} is even for rope, got {dim} / {heads}"
        )


def sinusoidal_features(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Positions (...) (integers or real, e.g. diffusion times) -> (..., dim) features
    [sin(p w_0), cos(p w_0), sin(p w_1), ...] with w_i = 10000^(-2i/dim), dim even; float64
    for float64 positions, float32 otherwise."""
    if dim % 2:
        raise ValueError(f"sinusoidal positions need an even width, got {dim}")
    dtype = compute_dtype(positions.dtype)
    w = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=dtype, device=positions.device) / dim)
    angles = positions.to(dtype)[..., None] * w
    return torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1).flatten(-2)


def sinusoidal_table(length: int, dim: int) -> torch.Tensor:
    """(length, dim) table of sin/cos features for positions 0..length-1, dim even."""
    return sinusoidal_features(torch.arange(length), dim)


class SinusoidalPositions(nn.Module):
    """x: (B, T, D) -> x + P[offset : offset + T]."""

    def __init__(self, dim: int, max_len: int = 4096) -> None:
        super().__init__()
        self.register_buffer("table", sinusoidal_table(max_len, dim), persistent=False)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        if offset + x.shape[1] > len(self.table):
            self.table = sinusoidal_table(2 * (offset + x.shape[1]), x.shape[-1]).to(self.table.device)
        return x + self.table[offset : offset + x.shape[1]].to(x.dtype)


class LearnedPositions(nn.Module):
    """x: (B, T, D) -> x + E[offset : offset + T], a learned table of max_len rows."""

    def __init__(self, dim: int, max_len: int) -> None:
        super().__init__()
        self.max_len = max_len
        self.embedding = nn.Embedding(max_len, dim)
        nn.init.normal_(self.embedding.weight, std=0.02)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        if offset + x.shape[1] > self.max_len:
            raise ValueError(f"learned positions cover {self.max_len} steps, asked for {offset + x.shape[1]}")
        positions = torch.arange(offset, offset + x.shape[1], device=x.device)
        return x + self.embedding(positions)


class RotaryEmbedding(nn.Module):
    """Rotates (B, H, T, d) queries or keys by their positions offset .. offset + T - 1 (d even).
    cos/sin tables are cached and grown on demand.

    `pairs` says which features rotate together as pair i (angle m theta_i): "interleaved"
    (x_2i, x_2i+1), the RoFormer paper's; "halves" (x_i, x_i+d/2), GPT-NeoX's and LLaMA's
    (Hugging Face's `rotate_half`). The two differ only by a fixed permutation of the features,
    so a model trained with one is the other's with permuted q and k projections."""

    def __init__(
        self,
        head_dim: int,
        base: float = 10000.0,
        max_len: int = 2048,
        pairs: Literal["interleaved", "halves"] = "interleaved",
    ) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"RoPE needs an even head dimension, got {head_dim}")
        if pairs not in ("interleaved", "halves"):
            raise ValueError(f"RoPE pairs must be 'interleaved' or 'halves', got {pairs!r}")
        self.head_dim, self.base, self.pairs = head_dim, base, pairs
        self._build(max_len)

    def _build(self, length: int, device: torch.device | None = None) -> None:
        theta = self.base ** (
            -torch.arange(0, self.head_dim, 2, dtype=torch.float64, device=device) / self.head_dim
        )
        angles = torch.arange(length, dtype=torch.float64, device=device)[:, None] * theta  # (L, d/2)
        if self.pairs == "interleaved":  # each pair shares its angle: (L, d)
            angles = angles.repeat_interleave(2, dim=-1)
        else:
            angles = torch.cat([angles, angles], dim=-1)
        # float64 tables (a float64 model rotates by exact angles), cast to the input's dtype at use
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        T = x.shape[-2]
        if offset + T > len(self.cos):
            self._build(2 * (offset + T), self.cos.device)
        cos, sin = self.cos[offset : offset + T].to(x.dtype), self.sin[offset : offset + T].to(x.dtype)
        if self.pairs == "interleaved":
            pairs = x.unflatten(-1, (-1, 2))  # (..., d/2, 2)
            rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)  # (-x_2i+1, x_2i)
        else:
            first, second = x.chunk(2, dim=-1)
            rotated = torch.cat((-second, first), dim=-1)  # (-x_i+d/2, x_i)
        return x * cos + rotated * sin


def alibi_slopes(heads: int) -> torch.Tensor:
    """The geometric slopes 2^(-8h/H), h = 1..H (for H not a power of two, Press et al.'s
    interleaving of the next power of two's slopes)."""

    def power_of_two(n: int) -> list[float]:
        return [2 ** (-8 * h / n) for h in range(1, n + 1)]

    if math.log2(heads).is_integer():
        return torch.tensor(power_of_two(heads))
    closest = 2 ** math.floor(math.log2(heads))
    return torch.tensor(power_of_two(closest) + power_of_two(2 * closest)[0::2][: heads - closest])


def alibi_bias(heads: int, query_len: int, key_len: int, offset: int = 0) -> torch.Tensor:
    """(H, T, S) bias -s_h |i - j| for query positions offset .. offset + T - 1 and keys 0 .. S - 1."""
    i = torch.arange(offset, offset + query_len)[:, None]
    j = torch.arange(key_len)[None, :]
    return -alibi_slopes(heads)[:, None, None] * (i - j).abs()
