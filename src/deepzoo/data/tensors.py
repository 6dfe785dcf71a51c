"""A dataset held whole in tensors on the training device, batched by indexing."""

from __future__ import annotations

from dataclasses import dataclass

import torch

EVAL_BATCH = 128
"""Batch size of the evaluations that run a network over a whole split (predictions, features,
mean loss terms, likelihoods, codes). `deepzoo bench eval-batch` on a 2-core AMD EPYC (32 MiB L3):
against 128, batches of 1,000 took 1.6x (feature CNN), 1.7x (ResNet), 2.5x (Glow) and 3.3x
(PixelCNN) as long, their activations out of the cache, and 0.88x for the VQ-VAE's encoder; 128
was within 2% of the fastest size for every net but that encoder. Sequence models did not care."""


@dataclass
class TensorData:
    """Named tensors sharing their first dimension (the example index)."""

    tensors: dict[str, torch.Tensor]

    def __post_init__(self) -> None:
        sizes = {name: t.shape[0] for name, t in self.tensors.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"tensors must share their first dimension, got {sizes}")

    def __len__(self) -> int:
        return next(iter(self.tensors.values())).shape[0]

    def __getitem__(self, index: torch.Tensor | slice) -> dict[str, torch.Tensor]:
        return {name: t[index] for name, t in self.tensors.items()}

    def to(self, device: torch.device | str) -> TensorData:
        return TensorData({name: t.to(device) for name, t in self.tensors.items()})

    def batches(self, batch_size: int):
        """Consecutive batches in order, the last one possibly short (for evaluation)."""
        for start in range(0, len(self), batch_size):
            yield self[slice(start, start + batch_size)]
