"""Numerics that must not run in half precision."""

from __future__ import annotations

import torch


def upcast(x: torch.Tensor) -> torch.Tensor:
    """x in at least float32: bfloat16 and float16 rise to float32 (a softmax or a cross-entropy
    under autocast), float32 and float64 stay as they are (a float64 gradient check keeps its
    precision; `.float()` would round it to float32)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()
