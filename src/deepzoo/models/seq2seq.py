"""An encoder-decoder Transformer (Vaswani et al., 2017) for sequence-to-sequence tasks.

source (B, S) with padding -> encoder (pre-norm blocks, padded keys masked) -> memory (B, S, D);
target prefix (B, T) -> decoder (causal self-attention, cross-attention to the memory) -> logits.
Loss: next-token cross-entropy on the target, padding ignored. Positions are sinusoidal in the
encoder and rotary in the decoder's self-attention. Greedy decoding feeds one token at a time
through self-attention caches; cross-attention keys/values are computed once per sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from deepzoo.config import Count, Index, Rate
from deepzoo.nn.attention import KVCache
from deepzoo.nn.positions import RotaryEmbedding, SinusoidalPositions, check_heads
from deepzoo.nn.precision import upcast
from deepzoo.nn.transformer import DecoderBlock, EncoderBlock


@dataclass(frozen=True)
class Seq2SeqConfig:
    vocab_size: Count = 13
    """Tokens, including PAD, BOS and EOS."""
    pad: Index = 10
    """Id of the padding token (masked in attention and loss)."""
    bos: Index = 11
    """Id of the begin-of-sequence token that starts decoding."""
    eos: Index = 12
    """Id of the end-of-sequence token."""
    dim: Count = 64
    """Width of the residual stream."""
    heads: Count = 4
    """Attention heads per block."""
    encoder_layers: Count = 2
    """Encoder blocks."""
    decoder_layers: Count = 2
    """Decoder blocks (causal self-attention, then cross-attention)."""
    dropout: Rate = 0.0
    """Dropout in every block."""

    def __post_init__(self) -> None:
        check_heads(self.dim, self.heads, rope=True)


class Seq2Seq(nn.Module):
    def __init__(self, config: Seq2SeqConfig = Seq2SeqConfig()) -> None:
        super().__init__()
        c = self.config = config
        self.embed = nn.Embedding(c.vocab_size, c.dim)
        self.source_positions = SinusoidalPositions(c.dim)
        self.rope = RotaryEmbedding(c.dim // c.heads)
        self.encoder = nn.ModuleList(
            EncoderBlock(c.dim, c.heads, dropout=c.dropout) for _ in range(c.encoder_layers)
        )
        self.decoder = nn.ModuleList(
            DecoderBlock(c.dim, c.heads, cross=True, dropout=c.dropout) for _ in range(c.decoder_layers)
        )
        self.ln_enc, self.ln_dec = nn.LayerNorm(c.dim), nn.LayerNorm(c.dim)
        self.head = nn.Linear(c.dim, c.vocab_size)

    def encode(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """source (B, S) -> memory (B, S, D) and its padding mask (B, S)."""
        padding = source == self.config.pad
        x = self.source_positions(self.embed(source))
        for block in self.encoder:
            x = block(x, padding)
        return self.ln_enc(x), padding

    def decode(
        self,
        target: torch.Tensor,
        memory: torch.Tensor,
        padding: torch.Tensor,
        caches: list[dict[str, KVCache]] | None = None,
    ) -> torch.Tensor:
        """target (B, T) (continuing the cached prefix when caches are given) -> logits (B, T, V)."""
        x = self.embed(target)
        for i, block in enumerate(self.decoder):
            x = block(x, memory, padding, rope=self.rope, caches=None if caches is None else caches[i])
        return self.head(self.ln_dec(x))

    def forward(self, source: torch.Tensor, target_in: torch.Tensor) -> torch.Tensor:
        memory, padding = self.encode(source)
        return self.decode(target_in, memory, padding)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """batch: source (B, S), target (B, T) = [BOS, y_1, ..., EOS, PAD...]."""
        target = batch["target"]
        logits = self(batch["source"], target[:, :-1])
        loss = F.cross_entropy(
            upcast(logits.flatten(0, 1)), target[:, 1:].flatten(), ignore_index=self.config.pad
        )
        return {"loss": loss}

    @torch.no_grad()
    def greedy(self, source: torch.Tensor, max_len: int, use_cache: bool = True) -> torch.Tensor:
        """Greedy decoding: (B, max_len) tokens after BOS (everything after EOS is PAD)."""
        memory, padding = self.encode(source)
        B = source.shape[0]
        tokens = torch.full((B, 1), self.config.bos, dtype=torch.long, device=source.device)
        caches = (
            [{"self": KVCache(), "cross": KVCache(static=True)} for _ in self.decoder] if use_cache else None
        )
        step_input = tokens
        for _ in range(max_len):
            logits = self.decode(step_input, memory, padding, caches)[:, -1]
            token = logits.argmax(dim=-1, keepdim=True)
            tokens = torch.cat([tokens, token], dim=1)
            step_input = token if use_cache else tokens
        out = tokens[:, 1:]
        finished = (out == self.config.eos).cumsum(dim=1) > 0
        after_eos = finished & ~((out == self.config.eos) & (finished.cumsum(dim=1) == 1))
        return out.masked_fill(after_eos, self.config.pad)
