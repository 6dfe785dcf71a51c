"""Exponential moving average of weights: theta_ema <- d * theta_ema + (1 - d) * theta."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """A frozen copy of the whole `model` in which the parameters of submodule `of` ("" for all of
    them) trail the live ones with decay `decay`; its buffers (BatchNorm statistics) are copied as
    they are. Everything outside `of` (a GAN's discriminator) is copied from the live model by
    `copy_rest`, so `module` is always a complete model to evaluate and save."""

    def __init__(self, model: nn.Module, decay: float, of: str = "") -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        if of and not isinstance(model.get_submodule(of), nn.Module):  # raises AttributeError if absent
            raise ValueError(f"train.ema_of {of!r} is not a submodule")
        self.decay, self.of = decay, of
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self._averaged, self._copied, self._rest = self._pairs(model)

    def _pairs(self, model: nn.Module):
        def inside(name: str) -> bool:
            return not self.of or name == self.of or name.startswith(self.of + ".")

        params = dict(self.module.named_parameters())
        buffers = dict(self.module.named_buffers())
        averaged, copied, rest = [], [], []
        for name, live in model.named_parameters():
            (averaged if inside(name) else rest).append((params[name], live))
        for name, live in model.named_buffers():
            (copied if inside(name) else rest).append((buffers[name], live))
        return averaged, copied, rest

    @torch.no_grad()
    def update(self) -> None:
        for averaged, live in self._averaged:
            averaged.lerp_(live.detach(), 1.0 - self.decay)
        for copy_, live in self._copied:
            copy_.copy_(live)

    @torch.no_grad()
    def copy_rest(self) -> None:
        """Copy the live weights of everything outside `of` into `module`."""
        for copy_, live in self._rest:
            copy_.copy_(live.detach())
