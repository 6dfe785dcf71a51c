"""Shared fixtures. Tests read the real datasets from ../shared/data through the data root."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.setdefault("DEEPZOO_DATA", str(REPO.parent / "shared" / "data")))
"""The data root the tests read: DEEPZOO_DATA when set (a checkout elsewhere), else ../shared/data."""
# Under pytest-xdist (`make test` runs `pytest -n auto`) the workers share the cores: each gets
# cores // workers threads, since two workers of two threads each on two cores ran the suite 2x slower.
_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, torch.get_num_threads(), _CORES // _WORKERS)))


@contextmanager
def one_thread():
    """torch on one thread inside the block: a reference run made in the test's process sums in
    the order of the OMP_NUM_THREADS=1 processes it is compared with."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# DEEPZOO_TEST_SEED_OFFSET=k reruns the suite with every seed shifted by k (torch.manual_seed and
# torch.Generator().manual_seed, hence also the trainer's seed and data order): a training test
# must pass for k = 0..4, not only for the seed it names (`make test-seeds` runs all five).
SEED_OFFSET = int(os.environ.get("DEEPZOO_TEST_SEED_OFFSET", "0"))
if SEED_OFFSET:
    _manual_seed = torch.manual_seed

    class _ShiftedGenerator(torch.Generator):
        def manual_seed(self, seed: int) -> torch.Generator:
            return super().manual_seed(seed + SEED_OFFSET)

    torch.manual_seed = lambda seed: _manual_seed(seed + SEED_OFFSET)
    torch.Generator = _ShiftedGenerator


def pytest_collection_modifyitems(config, items):
    """Under a seed offset, skip the tests marked `seeds_covered`: they run seeds 0-4 themselves."""
    if SEED_OFFSET:
        skip = pytest.mark.skip(reason="runs seeds 0-4 itself (seeds_covered)")
        for item in items:
            if "seeds_covered" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def mnist_test():
    from deepzoo.data import load_mnist

    return load_mnist("test")


@pytest.fixture(scope="session")
def mnist_small(mnist_test):
    """The first 2,000 test images: enough for short training runs."""
    from deepzoo.data import TensorData

    return TensorData(mnist_test[slice(0, 2000)])


class FakeClock:
    """Stands in for a module's `time` (monkeypatch MODULE.time): perf_counter() reads `now`, which
    only the test moves."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


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


class TwoPlayer(nn.Module):
    """A minimal GAN-shaped model for the step contract: generator g (noise -> 2-d points) and
    discriminator d (points -> logit) in their own parameter groups; d is updated every step,
    g every other step (alternating updates, a term logged on half the steps)."""

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.g = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2))
        self.d = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 1))

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"g": list(self.g.parameters()), "d": list(self.d.parameters())}

    def train_step(self, batch, step, opt):
        softplus = nn.functional.softplus
        fake = self.g(batch["z"])
        loss_d = softplus(-self.d(batch["x"])).mean() + softplus(self.d(fake.detach())).mean()
        out = {"loss_d": loss_d, **opt.update("d", loss_d)}
        if step % 2 == 1:
            loss_g = softplus(-self.d(fake)).mean()
            out |= {"loss_g": loss_g, **opt.update("g", loss_g)}
        return out


def two_player_data(n: int = 512, seed: int = 0):
    """Real points x ~ N((2, -1), 0.5^2 I) and generator noise z ~ N(0, I_4), as fixed pairs."""
    from deepzoo.data import TensorData

    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=generator) * 0.5 + torch.tensor([2.0, -1.0])
    return TensorData({"x": x, "z": torch.randn(n, 4, generator=generator)})


@pytest.fixture
def tiny_recipe_run(tmp_path):
    """run(name, **fields) trains recipe `name` for 3 steps of 8 examples (CPU, fp32), its config's
    `fields` replaced, into tmp_path/run -> (run directory, the last evaluation's record)."""
    from dataclasses import replace

    from deepzoo.recipes import get_recipe, train_recipe
    from deepzoo.train.logging import read_metrics

    def run(name: str, **fields):
        default = get_recipe(name).default
        fast = dict(steps=3, batch_size=8, eval_every=3, checkpoint_every=3, progress=False, device="cpu")
        config = replace(default, train=replace(default.train, precision="fp32", **fast), **fields)
        run_dir = train_recipe(name, config, tmp_path / "run").run_dir
        return run_dir, [r for r in read_metrics(run_dir / "metrics.jsonl") if r["split"] == "eval"][-1]

    return run
