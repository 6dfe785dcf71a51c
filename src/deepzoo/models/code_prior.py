"""Stage 2 of a two-stage image model: a conditional GPT over the code grid of a frozen tokenizer
(VQ-VAE: van den Oord et al., 2017, with a PixelCNN there; VQGAN: Esser et al., 2021, with a
GPT as here).

A tokenizer is any module with
    encode(x) -> codes (B, h, w) int64 in [0, num_codes),  decode(codes) -> images,
    num_codes: int,  grid: (h, w).
The h * w codes in raster order, after L condition tokens K + y_1, ..., K + y_L (y_i in
[0, num_classes)), are one sequence for a GPT with vocabulary K + num_classes:

    p(k_1 .. k_hw | y) = prod_t p(k_t | k_<t, y),  trained by next-token cross-entropy (nats/code).

MNIST digits have one condition token (the digit); a scene of several digits has L = the most
digits a scene holds, its labels in reading order, padded with the class "no digit". Sampling
draws codes only (ids < K) and decodes them with the frozen tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from deepzoo.config import Index, Positive
from deepzoo.models.gpt import GPT, GPTConfig
from deepzoo.nn.precision import upcast


@dataclass(frozen=True)
class CodePriorConfig:
    gpt: GPTConfig = GPTConfig(vocab_size=0, block_size=0, layers=4, heads=4, dim=128, positions="learned")
    """vocab_size 0: num_codes + num_classes; block_size 0: condition_length + h * w - 1 (the
    longest input); any other value must equal those."""
    num_classes: int = 10
    """Values a condition token takes."""
    condition_length: int = 1
    """L, condition tokens before the codes."""
    condition_bank: Index = 0
    """Condition rows kept from the training data (`remember_conditions`) for `sample` to draw
    without labels when L > 1; with L = 1 it cycles 0, 1, ..., num_classes - 1."""
    temperature: Positive = 1.0
    """Sampling temperature of the prior."""
    top_k: Index = 0
    """Sample from the top-k codes only (0: all)."""

    def __post_init__(self) -> None:
        if self.num_classes < 1 or self.condition_length < 1:
            raise ValueError(
                "need num_classes >= 1 and condition_length >= 1, "
                f"got {self.num_classes} and {self.condition_length}"
            )


class CodePrior(nn.Module):
    """A conditional GPT over a frozen tokenizer's code grid; `sample` returns decoded images."""

    def __init__(self, config: CodePriorConfig, tokenizer: nn.Module) -> None:
        super().__init__()
        self.config = c = config
        self.tokenizer = tokenizer.requires_grad_(False).eval()
        h, w = tokenizer.grid
        self.grid, self.num_codes = (h, w), tokenizer.num_codes
        derived = {"vocab_size": self.num_codes + c.num_classes, "block_size": c.condition_length + h * w - 1}
        for name, value in derived.items():
            if getattr(c.gpt, name) not in (0, value):
                raise ValueError(f"the prior's gpt.{name} must be 0 or {value}, got {getattr(c.gpt, name)}")
        self.gpt = GPT(replace(c.gpt, **derived))
        self.register_buffer(
            "conditions", torch.zeros(c.condition_bank, c.condition_length, dtype=torch.long)
        )

    def train(self, mode: bool = True) -> CodePrior:
        super().train(mode)
        self.tokenizer.eval()  # frozen: no EMA updates, no restarts
        return self

    def _conditions(self, y: torch.Tensor) -> torch.Tensor:
        """y (B,) or (B, L) -> (B, L), checked against the config."""
        y = y.reshape(len(y), -1)
        if y.shape[1] != self.config.condition_length:
            raise ValueError(
                f"expected {self.config.condition_length} condition labels per row, got {y.shape[1]}"
            )
        return y

    def tokens(self, codes: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """codes (B, h, w), y (B,) or (B, L) -> [K + y_1, ..., K + y_L, k_1, ..., k_hw] (B, L + hw)."""
        return torch.cat([self.num_codes + self._conditions(y), codes.flatten(1)], dim=1)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Cross-entropy of the codes in nats per code (batch: "codes" (B, h, w), "y" (B,) or (B, L)).
        The condition tokens are given, never predicted."""
        tokens = self.tokens(batch["codes"], batch["y"])
        logits = self.gpt(tokens[:, :-1])[:, self.config.condition_length - 1 :]
        loss = nn.functional.cross_entropy(
            upcast(logits.flatten(0, 1)), tokens[:, self.config.condition_length :].flatten()
        )
        return {"loss": loss}

    @torch.no_grad()
    def remember_conditions(self, y: torch.Tensor) -> None:
        """Keep the first `condition_bank` rows of training labels y (N,) or (N, L) for `sample`."""
        rows = self._conditions(y)[: self.config.condition_bank]
        self.conditions[: len(rows)] = rows.to(self.conditions.device)

    def default_labels(self, n: int, device: torch.device) -> torch.Tensor:
        """L = 1: 0, 1, ..., num_classes - 1, 0, ...; else the remembered training rows, cycled."""
        if self.config.condition_length == 1:
            return torch.arange(n, device=device) % self.config.num_classes
        if len(self.conditions) == 0:
            raise ValueError("this prior keeps no condition rows (condition_bank 0): pass labels to sample")
        return self.conditions[torch.arange(n, device=device) % len(self.conditions)]

    @torch.no_grad()
    def sample_codes(
        self, n: int, *, generator: torch.Generator | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """n code grids (n, h, w) drawn under the condition labels (default `default_labels`)."""
        device = self.gpt.embed.weight.device
        y = self.default_labels(n, device) if labels is None else labels.to(device)
        prompt = self.num_codes + self._conditions(y)
        h, w = self.grid
        c = self.config
        tokens = self.gpt.generate(
            prompt, h * w, c.temperature, c.top_k, generator=generator, max_token=self.num_codes
        )
        return tokens[:, c.condition_length :].reshape(n, h, w)

    @torch.no_grad()
    def sample(
        self, n: int, *, generator: torch.Generator | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """n decoded images under the condition labels (default `default_labels`)."""
        return self.tokenizer.decode(self.sample_codes(n, generator=generator, labels=labels))
