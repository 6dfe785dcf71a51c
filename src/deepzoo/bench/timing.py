"""Shared measuring helpers: the machine, its matmul peak, medians of repeated timings, FLOP
counts, and training a recipe variant into a directory."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from deepzoo.train.logging import read_metrics


def matmul_peak(
    size: int = 2048, repeats: int = 7, names: tuple[str, ...] = ("fp32", "bf16")
) -> dict[str, float]:
    """Median GFLOP/s of a (size x size) @ (size x size) torch.mm in fp32 and bf16 (2 n^3 flops).
    On a CPU without AMX or AVX512-BF16, one bf16 mm of 2048 takes about a minute (seen on an AMD
    EPYC: 58 s against 0.12 s in fp32)."""
    peak = {}
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    for name, dtype in ((name, dtypes[name]) for name in names):
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        for _ in range(2):
            torch.mm(a, b)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            times.append(time.perf_counter() - start)
        peak[name] = 2 * size**3 / statistics.median(times) / 1e9
    return peak


def first_time_at(
    records: list[dict], metric: str, bar: float, higher_is_better: bool = True
) -> float | None:
    """Training wall time of the first evaluation with `metric` at or past `bar` (None if never)."""
    for record in records:
        if record.get("split") == "eval" and metric in record:
            if (record[metric] >= bar) if higher_is_better else (record[metric] <= bar):
                return record["time"]
    return None


def train_flops_per_example(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> float:
    """Forward + backward FLOPs of one example, counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        model.loss(batch)["loss"].backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / len(next(iter(batch.values())))


def machine() -> dict[str, Any]:
    return {
        "processor": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "amx": bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()),
        "date": time.strftime("%Y-%m-%d"),
    }


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall time of `repeats` calls of fn, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_speedup(
    ours: Callable[[], Any], peer: Callable[[], Any], repeats: int, rounds: int
) -> tuple[float, float, float]:
    """(median seconds of ours, of peer, median over rounds of peer / ours): `rounds` alternating
    rounds of `median_seconds(fn, repeats)` each, so both see the same machine load."""
    times: dict[str, list[float]] = {"ours": [], "peer": []}
    for _ in range(rounds):
        times["ours"].append(median_seconds(ours, repeats))
        times["peer"].append(median_seconds(peer, repeats))
    speedup = statistics.median(p / o for o, p in zip(times["ours"], times["peer"], strict=True))
    return statistics.median(times["ours"]), statistics.median(times["peer"]), speedup


def last_eval(run_dir: Path) -> dict[str, float]:
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if r["split"] == "eval"][-1]


def train_variant(
    name: str, run_dir: Path, *, quick: bool = False, config: Any = None, evaluate: bool = True, **train: Any
):
    """Train recipe `name` (its default config, or `config`) with the train fields `train`
    replaced, into run_dir; `quick` shortens it to 50 steps. Returns (TrainResult, wall seconds)."""
    from deepzoo.recipes import get_recipe, train_recipe

    config = config if config is not None else get_recipe(name).default
    if quick:
        train = {"steps": 50, "eval_every": 50, "checkpoint_every": 50} | train
    if train:
        config = replace(config, train=replace(config.train, **train))
    start = time.perf_counter()
    result = train_recipe(name, config, run_dir, evaluate=evaluate)
    return result, time.perf_counter() - start


def train_recipe_report(
    name: str, quick: bool, results: Path, picture: str, keys: tuple[str, ...]
) -> dict[str, Any]:
    """Train recipe `name` with its defaults; its steps, training seconds, last evaluation's
    `keys`, the curve of its headline metric, and its picture run_dir/samples/`picture` copied to
    results/NAME.png."""
    import shutil
    import tempfile

    from deepzoo.recipes import get_recipe

    metric = get_recipe(name).metric
    with tempfile.TemporaryDirectory() as tmp:
        result, wall = train_variant(name, Path(tmp) / name, quick=quick)
        evals = [r for r in read_metrics(result.run_dir / "metrics.jsonl") if r["split"] == "eval"]
        shutil.copy(result.run_dir / "samples" / picture, results / f"{name}.png")
    return {
        "steps": result.step, "train_seconds": evals[-1]["time"], "wall_seconds": wall,
        "final": {k: evals[-1][k] for k in keys},
        "curve": [{"step": r["step"], "seconds": r["time"], metric: r[metric]} for r in evals],
    }  # fmt: skip
