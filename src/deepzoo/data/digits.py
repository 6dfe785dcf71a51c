"""Digit-sorting pairs for sequence-to-sequence models: source = random digits of random length,
target = the same digits sorted, framed as [BOS, sorted..., EOS] and padded. Deterministic from a
seed. Sorting needs every output position to look at the whole input: cross-attention."""

from __future__ import annotations

import torch

from deepzoo.data.tensors import TensorData

PAD, BOS, EOS = 10, 11, 12


def sorting_pairs(n: int, min_len: int = 4, max_len: int = 12, seed: int = 0) -> TensorData:
    """{"source": (n, max_len) digits then PAD, "target": (n, max_len + 2) BOS sorted EOS PAD}."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_len, max_len + 1, (n,), generator=generator)
    digits = torch.randint(0, 10, (n, max_len), generator=generator)
    positions = torch.arange(max_len)[None, :]
    valid = positions < lengths[:, None]
    source = digits.masked_fill(~valid, PAD)
    ordered = source.sort(dim=1).values  # PAD (10) sorts after every digit
    target = torch.full((n, max_len + 2), PAD)
    target[:, 0] = BOS
    target[:, 1:-1] = ordered
    target[torch.arange(n), lengths + 1] = EOS
    return TensorData({"source": source, "target": target})
