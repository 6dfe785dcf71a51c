"""Token ids to text, for the language models whose config names their characters."""

from __future__ import annotations

import torch


def tokens_to_text(tokens: torch.Tensor, charset: str) -> list[str]:
    """(n, T) ids -> n strings, token i being charset[i]."""
    if not charset:
        raise ValueError("this model's config names no charset, so its tokens have no text")
    return ["".join(charset[int(t)] for t in row) for row in tokens]
