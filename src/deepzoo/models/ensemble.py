"""A model ensemble (the course's "use multiple independent models"): the average of the members'
predicted class probabilities,

    p(y | x) = (1 / M) sum_m softmax(f_m(x))_y,

returned as log-probabilities (B, K) = logsumexp_m log_softmax(f_m(x)) - log M, so argmax, softmax
and cross-entropy read them as logits. Members are classifiers whose forward returns logits."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from deepzoo.nn.precision import upcast


class Ensemble(nn.Module):
    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, ...) -> log of the mean member probability (B, K)."""
        log_probs = torch.stack([upcast(member(x)).log_softmax(-1) for member in self.members])  # (M, B, K)
        return torch.logsumexp(log_probs, 0) - math.log(len(self.members))
