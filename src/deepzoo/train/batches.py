"""Batch sources: where the trainer's batches come from.

A batch source has `next(step) -> batch` (this rank's share of global batch `step`), and
`state_dict()` / `load_state_dict()` for what a checkpoint must hold to continue it. What resume
guarantees depends on the source:

- `ShuffledBatches` (a dataset held in tensors) and `GeneratedBatches` (synthetic data drawn from a
  generator seeded by the step): the batch is a pure function of (seed, step, rank), so their state
  is empty and a resumed run, or a DDP run with the same global batch, sees exactly the batches of
  an uninterrupted single-process run.
- Environment rollouts (the RL family): the batch depends on the environments' state and on the
  policy that acted. Their source saves what it can (the environments' RNG, episode counters);
  resume then continues from the last checkpoint's environment state, which equals the
  uninterrupted run only for environments whose whole state is that RNG. Say so in the recipe.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch

from deepzoo.data.tensors import TensorData

Batch = dict[str, torch.Tensor]


class BatchSource(Protocol):
    def next(self, step: int) -> Batch:
        """This rank's share of global batch `step` (0-based), on the training device."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The data order of one epoch: a permutation of range(n) from a CPU generator seeded by
    (seed, epoch), so it is the same on every device and every rank."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator)


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> torch.Tensor:
    """Indices of global batch `step`: consecutive slices of a fresh permutation every epoch
    (the n % batch_size examples left over at an epoch's end wait for the next epoch's order)."""
    per_epoch = n // batch_size
    if per_epoch == 0:
        raise ValueError(f"train.batch_size {batch_size} exceeds the dataset size {n}")
    epoch, i = divmod(step, per_epoch)
    return permutation(n, seed, epoch)[i * batch_size : (i + 1) * batch_size]


class ShuffledBatches:
    """Batches of a TensorData by indexing: global batch t is the t-th slice of the epoch's
    permutation; rank r of N takes every N-th example of it. The permutation is moved to the
    data's device once per epoch, so a step copies nothing from the host."""

    def __init__(self, data: TensorData, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if batch_size % world_size:
            raise ValueError(f"train.batch_size {batch_size} is not divisible by {world_size} ranks")
        if len(data) < batch_size:
            raise ValueError(f"train.batch_size {batch_size} exceeds the dataset size {len(data)}")
        self.data, self.batch_size, self.seed = data, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self._epoch, self._order = -1, torch.empty(0, dtype=torch.long)

    def next(self, step: int) -> Batch:
        per_epoch = len(self.data) // self.batch_size
        epoch, i = divmod(step, per_epoch)
        if epoch != self._epoch:
            device = next(iter(self.data.tensors.values())).device
            self._epoch, self._order = epoch, permutation(len(self.data), self.seed, epoch).to(device)
        index = self._order[i * self.batch_size : (i + 1) * self.batch_size]
        return self.data[index[self.rank :: self.world_size]]

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class GeneratedBatches:
    """Synthetic data: batch t is `draw(batch_size, generator)` with a generator seeded by
    (seed, t, rank), so it needs no state to resume. Under DDP each rank draws its own
    batch_size / N examples: the global batch differs from a single process's draw."""

    def __init__(
        self,
        draw: Callable[[int, torch.Generator], Batch],
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str = "cpu",
    ) -> None:
        if batch_size % world_size:
            raise ValueError(f"train.batch_size {batch_size} is not divisible by {world_size} ranks")
        self.draw, self.batch_size, self.seed = draw, batch_size, seed
        self.local_batch, self.rank = batch_size // world_size, rank
        self.device = torch.device(device)

    def placed(self, rank: int, world_size: int, device: torch.device | str) -> GeneratedBatches:
        """The same source as rank `rank` of `world_size` draws it, on `device` (the trainer calls
        this, so a recipe builds the source without knowing where it will run)."""
        return GeneratedBatches(self.draw, self.batch_size, self.seed, rank, world_size, device)

    def next(self, step: int) -> Batch:
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + step) * 1_009 + self.rank)
        return {k: v.to(self.device) for k, v in self.draw(self.local_batch, generator).items()}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
