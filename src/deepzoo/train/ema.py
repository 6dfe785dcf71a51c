"""Exponential moving average of weights: theta_ema <- d * theta_ema + (1 - d) * theta."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """A frozen copy of `model` whose parameters trail the live ones with decay `decay`;
    buffers (BatchNorm statistics) are copied as they are."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for averaged, live in zip(self.module.parameters(), model.parameters()):
            averaged.lerp_(live.detach(), 1.0 - self.decay)
        for averaged, live in zip(self.module.buffers(), model.buffers()):
            averaged.copy_(live)
