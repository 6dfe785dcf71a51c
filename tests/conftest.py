"""Shared fixtures. Tests read the real datasets from ../shared/data through the data root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
os.environ.setdefault("DEEPZOO_DATA", str(SHARED_DATA))
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def mnist_test():
    from deepzoo.data import load_mnist

    return load_mnist("test")


@pytest.fixture(scope="session")
def mnist_small(mnist_test):
    """The first 2,000 test images: enough for short training runs."""
    from deepzoo.data import TensorData

    return TensorData(mnist_test[slice(0, 2000)])


class TinyNet(nn.Module):
    """A small MLP that meets the model contract, with dropout so RNG state matters."""

    def __init__(self, dropout: float = 0.1) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Dropout(dropout), nn.Linear(32, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = self(batch["x"])
        return {
            "loss": nn.functional.cross_entropy(logits, batch["y"]),
            "accuracy": (logits.argmax(1) == batch["y"]).float().mean(),
        }


@pytest.fixture
def tiny_net():
    torch.manual_seed(0)
    return TinyNet()
