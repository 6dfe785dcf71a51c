"""Numerics that must not run in half precision."""

from __future__ import annotations

import torch


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype to compute in for inputs of `dtype`: float64 stays float64 (a gradient check keeps
    its precision), anything else (bfloat16, float16, float32, integers) computes in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def upcast(x: torch.Tensor) -> torch.Tensor:
    """x in at least float32: bfloat16 and float16 rise to float32 (a softmax or a cross-entropy
    under autocast), float32 and float64 stay as they are (`.float()` would round float64)."""
    return x.to(compute_dtype(x.dtype))
