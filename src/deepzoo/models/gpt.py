"""A decoder-only Transformer language model (GPT; Radford et al., 2018/2019), nanoGPT-style.

tokens (B, T) -> e = E[tokens] (+ additive positions) -> N pre-norm causal blocks -> LN ->
logits = e_out E^T (the output layer is tied to the embedding). Loss: next-token cross-entropy in
nats. Generation samples from softmax(logits / temperature) restricted to the top-k tokens, feeding
one token at a time through per-layer key/value caches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from deepzoo.config import Count, Index, Rate
from deepzoo.models.text import tokens_to_text
from deepzoo.nn.attention import KVCache
from deepzoo.nn.positions import LearnedPositions, RotaryEmbedding, SinusoidalPositions, check_heads
from deepzoo.nn.precision import upcast
from deepzoo.nn.transformer import DecoderBlock

Positions = Literal["learned", "sinusoidal", "rope", "alibi"]


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: Index = 65
    """Number of token ids."""
    block_size: Index = 64
    """Longest context the model is trained on (and the learned table's length)."""
    layers: Count = 4
    """Transformer blocks."""
    heads: Count = 4
    """Attention heads per block (dim must divide by it)."""
    dim: Count = 128
    """Width of the residual stream."""
    dropout: Rate = 0.0
    """Dropout on the embeddings, attention weights and residual branches."""
    positions: Positions = "rope"
    """learned or sinusoidal (added to the embedding), rope (rotary) or alibi (score bias)."""
    bias: bool = False
    """Biases in Linear and LayerNorm layers."""
    attention_kernel: Literal["auto", "sdpa", "math"] = "auto"
    """auto: the explicit softmax(QK^T/sqrt d)V on CPU (faster there for short contexts), SDPA on GPU."""
    charset: str = ""
    """Characters of the token ids, for `to_text` (the recipe sets tiny-shakespeare's)."""

    def __post_init__(self) -> None:
        check_heads(self.dim, self.heads, rope=self.positions == "rope")


def sample_next(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One token per row of logits (B, V): softmax(logits / temperature) over the top_k largest
    (all when 0); temperature 0 is greedy argmax. Returns (B, 1)."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = upcast(logits) / temperature
    if top_k:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if generator is not None and generator.device.type != probs.device.type:  # CPU generator, CUDA logits
        return torch.multinomial(probs.cpu(), 1, generator=generator).to(probs.device)
    return torch.multinomial(probs, 1, generator=generator)


class GPT(nn.Module):
    def __init__(self, config: GPTConfig = GPTConfig()) -> None:
        super().__init__()
        self.config = config
        c = config
        self.embed = nn.Embedding(c.vocab_size, c.dim)
        self.positions: nn.Module | None = {
            "learned": lambda: LearnedPositions(c.dim, c.block_size),
            "sinusoidal": lambda: SinusoidalPositions(c.dim),
        }.get(c.positions, lambda: None)()
        self.rope = RotaryEmbedding(c.dim // c.heads) if c.positions == "rope" else None
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            DecoderBlock(c.dim, c.heads, dropout=c.dropout, bias=c.bias, kernel=c.attention_kernel)
            for _ in range(c.layers)
        )
        self.ln_f = nn.LayerNorm(c.dim, bias=c.bias)
        self.head = nn.Linear(c.dim, c.vocab_size, bias=False)
        self.init_weights()
        self.head.weight = self.embed.weight  # weight tying (Press & Wolf, 2017)

    def init_weights(self) -> None:
        """N(0, 0.02) weights; residual output projections scaled by 1/sqrt(2 N) (GPT-2)."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for block in self.blocks:
            for proj in (block.attn.out_proj, block.mlp.proj):
                nn.init.normal_(proj.weight, std=0.02 / (2 * self.config.layers) ** 0.5)

    def forward(
        self,
        tokens: torch.Tensor,
        caches: list[dict[str, KVCache]] | None = None,
        extra: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """tokens (B, T) -> logits (B, T, V). With caches, tokens continue the cached sequence;
        `extra` (B, T, D) is added to the token embeddings (a per-position conditioning)."""
        return self.head(self.features(tokens, caches, extra))

    def features(
        self,
        tokens: torch.Tensor,
        caches: list[dict[str, KVCache]] | None = None,
        extra: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """tokens (B, T) -> the final LayerNorm's output (B, T, D), which `head` maps to logits."""
        offset = 0 if caches is None else caches[0]["self"].length
        x = self.embed(tokens)  # (B, T, D)
        if extra is not None:
            x = x + extra
        if self.positions is not None:
            x = self.positions(x, offset)
        x = self.drop(x)
        alibi = self.config.positions == "alibi"
        for i, block in enumerate(self.blocks):
            x = block(x, rope=self.rope, alibi=alibi, caches=None if caches is None else caches[i])
        return self.ln_f(x)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        tokens = batch["tokens"]  # (B, T + 1)
        logits = self(tokens[:, :-1])
        return {"loss": F.cross_entropy(upcast(logits.flatten(0, 1)), tokens[:, 1:].flatten())}

    def new_caches(self) -> list[dict[str, KVCache]]:
        return [{"self": KVCache()} for _ in self.blocks]

    @torch.no_grad()
    def generate(
        self,
        prompt: torch.Tensor,
        new_tokens: int,
        temperature: float = 1.0,
        top_k: int = 0,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        max_token: int | None = None,
    ) -> torch.Tensor:
        """prompt (B, T0) -> (B, T0 + new_tokens). Each token is drawn from the logits of the last
        block_size tokens (the context the model was trained on). The KV cache gives the same
        result: while the sequence fits the block it grows by one token a step; past it the window
        slides, every position shifts, and the cache is rebuilt from the window.
        With max_token, only ids below it are drawn (a vocabulary whose top ids are prompts only)."""
        block = self.config.block_size
        tokens = prompt
        caches = self.new_caches() if use_cache else None
        logits = self(prompt[:, -block:], caches)[:, -1]
        for i in range(new_tokens):
            token = sample_next(logits[:, :max_token], temperature, top_k, generator)
            tokens = torch.cat([tokens, token], dim=1)
            if i == new_tokens - 1:
                break  # the last token needs no logits (and may sit at position block_size)
            if caches is not None and caches[0]["self"].length < block:
                logits = self(token, caches)[:, -1]
            else:
                caches = self.new_caches() if caches is not None else None
                logits = self(tokens[:, -block:], caches)[:, -1]
        return tokens

    def sample(
        self, n: int, *, generator: torch.Generator | None = None, length: int = 300, top_k: int = 0
    ) -> torch.Tensor:
        """n generated sequences of `length` token ids (n, length), started from token 0 (a newline
        in the tiny-shakespeare charset); `to_text` turns them into strings."""
        device = self.embed.weight.device
        prompt = torch.zeros(n, 1, dtype=torch.long, device=device)
        return self.generate(prompt, length, top_k=top_k, generator=generator)[:, 1:]

    def to_text(self, tokens: torch.Tensor) -> list[str]:
        return tokens_to_text(tokens, self.config.charset)
