"""A character-level LSTM language model (Karpathy's char-rnn) trained with truncated BPTT.

tokens: (B, T + 1) ids; the model predicts token t + 1 from tokens <= t:
    e_t = E[x_t];  h_t = LSTM(e_t, h_{t-1});  p(x_{t+1} | x_<=t) = softmax(W h_t + b)
    L = -1/(B T) sum_{b,t} log p(x_{b,t+1} | x_{b,<=t})   (nats per character)
Truncated BPTT: the window is cut into chunks of `tbptt` steps; the hidden state flows into the
next chunk as a value, but gradients stop at the chunk boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from deepzoo.config import Count, Index, Rate
from deepzoo.models.text import tokens_to_text
from deepzoo.nn.precision import upcast
from deepzoo.nn.recurrent import LSTM, detach_state


@dataclass(frozen=True)
class CharLSTMConfig:
    vocab_size: Index = 65
    """Number of token ids (tiny-shakespeare has 65 characters)."""
    embed_dim: Count = 64
    """Width of the character embedding."""
    hidden: Count = 256
    """LSTM hidden size."""
    layers: Count = 2
    """Stacked LSTM layers."""
    dropout: Rate = 0.0
    """Dropout between LSTM layers and before the output layer."""
    tbptt: Count = 64
    """Backpropagate through at most this many steps (0: the whole window)."""
    backend: Literal["torch", "deepzoo"] = "torch"
    """LSTM kernel: torch's fused one (5-7x faster on a CPU) or deepzoo's own `nn.recurrent.LSTM`.
    Both have the same parameters and give the same outputs (tested), so a run trained with one
    loads into the other."""
    charset: str = ""
    """Characters of the token ids, for `to_text` (the recipe sets tiny-shakespeare's)."""


class CharLSTM(nn.Module):
    def __init__(self, config: CharLSTMConfig = CharLSTMConfig()) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embed_dim)
        self.lstm = LSTM(
            config.embed_dim, config.hidden, config.layers, batch_first=True, dropout=config.dropout
        )
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden, config.vocab_size)

    def forward(self, tokens: torch.Tensor, state=None):
        """tokens (B, T) -> logits (B, T, V) and the LSTM state after the last step."""
        h, state = self.lstm(self.embed(tokens), state)
        return self.head(self.drop(h)), state

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        tokens = batch["tokens"]
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        T = inputs.shape[1]
        chunk = self.config.tbptt or T
        state, total = None, 0.0
        for start in range(0, T, chunk):
            logits, state = self(inputs[:, start : start + chunk], state)
            piece = targets[:, start : start + chunk]
            total = total + F.cross_entropy(upcast(logits.flatten(0, 1)), piece.flatten(), reduction="sum")
            state = detach_state(state)
        loss = total / targets.numel()
        return {"loss": loss}

    @torch.no_grad()
    def generate(
        self,
        prompt: torch.Tensor,
        length: int,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sample `length` tokens after prompt (B, T0): (B, T0 + length)."""
        logits, state = self(prompt)
        out = [prompt]
        for _ in range(length):
            probs = torch.softmax(upcast(logits[:, -1]) / temperature, dim=-1)
            token = torch.multinomial(probs, 1, generator=generator)
            out.append(token)
            logits, state = self(token, state)
        return torch.cat(out, dim=1)

    def sample(self, n: int, *, generator: torch.Generator | None = None, length: int = 300) -> torch.Tensor:
        """n sequences of `length` token ids (n, length), each started from token 0 (a newline in
        the tiny-shakespeare charset); `to_text` turns them into strings."""
        device = self.head.weight.device
        prompt = torch.zeros(n, 1, dtype=torch.long, device=device)
        return self.generate(prompt, length, generator=generator)[:, 1:]

    def to_text(self, tokens: torch.Tensor) -> list[str]:
        return tokens_to_text(tokens, self.config.charset)
