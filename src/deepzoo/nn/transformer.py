"""Pre-norm Transformer blocks (Vaswani et al., 2017; the pre-norm placement of GPT-2):

    encoder:  x <- x + Attn(LN(x));                    x <- x + MLP(LN(x))
    decoder:  x <- x + CausalAttn(LN(x));  x <- x + CrossAttn(LN(x), memory);  x <- x + MLP(LN(x))

MLP(x) = W_2 GELU(W_1 x), 4x wider inside. Positions are passed in: `rope` (rotary, applied
inside self-attention) or `alibi` (a score bias); additive encodings are the model's business.
"""

from __future__ import annotations

import torch
from torch import nn

from deepzoo.nn.attention import KVCache, MultiHeadAttention
from deepzoo.nn.positions import RotaryEmbedding


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, hidden, bias=bias)
        self.proj = nn.Linear(hidden, dim, bias=bias)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(nn.functional.gelu(self.fc(x))))


class EncoderBlock(nn.Module):
    """x: (B, T, D); padding: (B, T) True at padded tokens (they are never attended to)."""

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: int = 4,
        dropout: float = 0.0,
        bias: bool = True,
        kernel: str = "auto",
    ) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim, bias=bias), nn.LayerNorm(dim, bias=bias)
        self.attn = MultiHeadAttention(dim, heads, bias=bias, dropout=dropout, kernel=kernel)
        self.mlp = MLP(dim, mlp_ratio * dim, dropout, bias)
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        padding: torch.Tensor | None = None,
        rope: RotaryEmbedding | None = None,
        alibi: bool = False,
    ) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), key_padding_mask=padding, rope=rope, alibi=alibi))
        return x + self.mlp(self.ln2(x))


class DecoderBlock(EncoderBlock):
    """Causal self-attention, then (if `cross`) cross-attention to an encoder memory (B, S, D),
    then the MLP. caches: {"self": KVCache, "cross": KVCache} for step-by-step generation."""

    def __init__(
        self,
        dim: int,
        heads: int,
        cross: bool = False,
        mlp_ratio: int = 4,
        dropout: float = 0.0,
        bias: bool = True,
        kernel: str = "auto",
    ) -> None:
        super().__init__(dim, heads, mlp_ratio, dropout, bias, kernel)
        self.cross = (
            MultiHeadAttention(dim, heads, bias=bias, dropout=dropout, kernel=kernel) if cross else None
        )
        self.ln_cross = nn.LayerNorm(dim, bias=bias) if cross else None

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | None = None,
        memory_padding: torch.Tensor | None = None,
        rope: RotaryEmbedding | None = None,
        alibi: bool = False,
        caches: dict[str, KVCache] | None = None,
    ) -> torch.Tensor:
        caches = caches or {}
        x = x + self.drop(
            self.attn(self.ln1(x), causal=True, rope=rope, alibi=alibi, cache=caches.get("self"))
        )
        if self.cross is not None:
            attended = self.cross(
                self.ln_cross(x), memory, key_padding_mask=memory_padding, cache=caches.get("cross")
            )
            x = x + self.drop(attended)
        return x + self.mlp(self.ln2(x))
