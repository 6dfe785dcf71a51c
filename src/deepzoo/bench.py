"""Time-to-quality and speed benchmarks (`deepzoo bench`, `make bench`); never run in CI.

Each benchmark returns a JSON-ready dict with its measurements, targets and whether it met them;
results go to benchmarks/results/NAME.json and one markdown table, which README.md also shows
between its `<!-- results -->` markers. Times are medians of repeated runs, and speeds are given
as fractions of this machine's matmul peak measured in the same run, because the machine is shared.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from deepzoo import bench_generative
from deepzoo.train import checkpoint as ckpt
from deepzoo.train.logging import read_metrics


def matmul_peak(size: int = 2048, repeats: int = 7) -> dict[str, float]:
    """Median GFLOP/s of a (size x size) @ (size x size) torch.mm in fp32 and bf16 (2 n^3 flops)."""
    peak = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
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


def training_throughput(recipe_name: str, precision: str, steps: int) -> float:
    """Examples per second of `steps` training steps of a recipe (no evaluation, no warm-up)."""
    from deepzoo.recipes import get_recipe, train_recipe

    recipe = get_recipe(recipe_name)
    train = replace(
        recipe.default.train,
        steps=steps,
        log_every=max(1, steps // 4),
        precision=precision,
        eval_every=10**9,
        checkpoint_every=10**9,
        progress=False,
        target="",
    )
    config = replace(recipe.default, train=train)
    with tempfile.TemporaryDirectory() as tmp:
        train_recipe(recipe_name, config, Path(tmp) / "run", evaluate=False)
        records = read_metrics(Path(tmp) / "run" / "metrics.jsonl")
    logs = [r for r in records if r["split"] == "train"]
    # Skip the first logging window: it holds one-off start-up costs.
    examples = (logs[-1]["step"] - logs[0]["step"]) * train.batch_size
    return examples / (logs[-1]["time"] - logs[0]["time"])


def time_to_accuracy(
    recipe_name: str,
    bars: tuple[float, ...],
    repeats: int,
    max_seconds: float,
    metric: str = "accuracy",
    higher_is_better: bool = True,
) -> dict[str, Any]:
    """Train `repeats` times (seeds 0..), each until the hardest bar of `metric` or `max_seconds`."""
    from deepzoo.recipes import get_recipe, train_recipe

    recipe = get_recipe(recipe_name)
    runs = []
    for seed in range(repeats):
        train = replace(
            recipe.default.train,
            seed=seed,
            target=f"{metric}>={max(bars)}" if higher_is_better else f"{metric}<={min(bars)}",
            max_seconds=max_seconds,
            progress=False,
        )
        with tempfile.TemporaryDirectory() as tmp:
            result = train_recipe(recipe_name, replace(recipe.default, train=train), Path(tmp) / "r")
            records = read_metrics(Path(tmp) / "r" / "metrics.jsonl")
        evals = [r for r in records if r["split"] == "eval"]
        runs.append(
            {
                "seed": seed,
                "steps": result.step,
                f"best_{metric}": (max if higher_is_better else min)(r[metric] for r in evals),
                "curve": [(r["step"], r["time"], r[metric]) for r in evals],
            }
            | {f"seconds_to_{bar}": first_time_at(records, metric, bar, higher_is_better) for bar in bars}
        )
    summary = {}
    for bar in bars:
        # A run that never reaches the bar counts as infinitely slow; the median is finite
        # when most runs reach it.
        times = [math.inf if run[f"seconds_to_{bar}"] is None else run[f"seconds_to_{bar}"] for run in runs]
        median = statistics.median(times)
        summary[f"median_seconds_to_{bar}"] = None if math.isinf(median) else median
        summary[f"runs_reaching_{bar}"] = sum(math.isfinite(t) for t in times)
    return {"recipe": recipe_name, "runs": runs} | summary


def classifier_report(
    recipe_name: str, bars: tuple[float, ...], peak: dict[str, float], quick: bool
) -> dict[str, Any]:
    """Time to each accuracy bar (median of 3 runs), bf16/fp32 throughput and share of the peak."""
    from deepzoo.data.mnist import load_mnist
    from deepzoo.recipes import get_recipe

    recipe = get_recipe(recipe_name)
    speed = {p: training_throughput(recipe_name, p, 40 if quick else 200) for p in ("fp32", "bf16")}
    torch.manual_seed(0)
    flops = train_flops_per_example(recipe.build(recipe.default), load_mnist("test")[slice(0, 64)])
    repeats, budget = (1, 20.0) if quick else (3, 90.0)
    return {
        "train_gflop_per_image": flops / 1e9,
        "throughput_images_per_s": speed,
        "bf16_speedup": speed["bf16"] / speed["fp32"],
        "fraction_of_bf16_peak": speed["bf16"] * flops / 1e9 / peak["bf16"],
        "fraction_of_fp32_peak_in_fp32": speed["fp32"] * flops / 1e9 / peak["fp32"],
    } | time_to_accuracy(recipe_name, bars, repeats, budget)


# (recipe, accuracy bar, seconds allowed): issue #2's time-to-accuracy goals on a 2-core CPU.
CLASSIFIER_GOALS = (("cnn-mnist", 0.99, 15.0), ("cnn-mnist-wide", 0.995, 60.0))


def bench_mnist_classifier(quick: bool = False) -> dict[str, Any]:
    """Wall seconds from the start of training to the first evaluation at or above 99.0% and
    99.5% MNIST test accuracy (full test set, median of 3 runs), training throughput in bf16 and
    fp32, and the fraction of the machine's matmul peak, measured in the same run."""
    peak = matmul_peak()
    recipes = {name: classifier_report(name, (0.99, 0.995), peak, quick) for name, _, _ in CLASSIFIER_GOALS}
    goals = [
        {
            "recipe": name,
            "accuracy": bar,
            "max_seconds": limit,
            "median_seconds": recipes[name][f"median_seconds_to_{bar}"],
        }
        for name, bar, limit in CLASSIFIER_GOALS
    ]
    for goal in goals:
        goal["met"] = goal["median_seconds"] is not None and goal["median_seconds"] <= goal["max_seconds"]
    return {
        "benchmark": "mnist-classifier",
        "matmul_peak_gflops": peak,
        "goals": goals,
        "recipes": recipes,
    }


def bench_resnet_mnist(quick: bool = False) -> dict[str, Any]:
    """The ResNet recipe's time to 99.0% / 99.5% test accuracy (median of 3) and its best accuracy."""
    return {"benchmark": "resnet-mnist"} | time_to_accuracy(
        "resnet-mnist", (0.99, 0.995), 1 if quick else 3, 30.0 if quick else 150.0
    )


# (recipe, headline metric, the number issue #3 expects)
FOUNDATION_GOALS = (
    ("knn-mnist", "accuracy", "about 96.9%"),
    ("linear-svm-mnist", "accuracy", "about 92%"),
    ("linear-softmax-mnist", "accuracy", "about 92%"),
    ("two-layer-mnist", "accuracy", "at least 98%"),
    ("char-lstm-shakespeare", "val_loss", "validation loss reported"),
)


def bench_foundations(quick: bool = False) -> dict[str, Any]:
    """Issue #3: each course-foundation recipe trained once with its defaults: the final test metric
    (full MNIST test set; tiny-shakespeare validation split, nats/char) and the wall time of the
    whole `train` call (data loading and kNN cross-validation included)."""
    from deepzoo.recipes import get_recipe, train_recipe

    results = {}
    for name, metric, expected in FOUNDATION_GOALS:
        recipe = get_recipe(name)
        train = replace(recipe.default.train, progress=False)
        if quick:
            train = replace(train, steps=min(train.steps, 20), eval_every=20)
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            result = train_recipe(name, replace(recipe.default, train=train), Path(tmp) / "r")
        results[name] = {
            "metric": metric,
            "value": result.metrics[metric],
            "best": result.best.get("value"),
            "extra": {k: v for k, v in result.metrics.items() if k not in (metric, "error")},
            "steps": result.step,
            "wall_seconds": time.perf_counter() - start,
            "expected": expected,
        }
    return {"benchmark": "foundations", "recipes": results}


def bench_gpt_shakespeare(quick: bool = False) -> dict[str, Any]:
    """Issue #4: wall seconds to validation loss 1.88 nats/char (median of 3), and the best
    validation loss of one 5-minute run of the same recipe."""
    from deepzoo.recipes import get_recipe, train_recipe

    report = time_to_accuracy(
        "gpt-shakespeare", (1.88,), 1 if quick else 3, 20.0 if quick else 150.0, "val_loss", False
    )
    recipe = get_recipe("gpt-shakespeare")
    long = replace(
        recipe.default.train,
        steps=1 if quick else 9000,
        max_seconds=10.0 if quick else 300.0,
        eval_every=500,
        progress=False,
    )
    with tempfile.TemporaryDirectory() as tmp:
        result = train_recipe("gpt-shakespeare", replace(recipe.default, train=long), Path(tmp) / "r")
    return (
        {"benchmark": "gpt-shakespeare", "goal_seconds": 30.0}
        | report
        | {"five_minute_run": {"steps": result.step, "best_val_loss": result.best.get("value")}}
    )


def attention_throughput(
    dtype: torch.dtype, seq: int = 256, dim: int = 256, heads: int = 4, batch: int = 8
) -> float:
    """Tokens/s of forward+backward through one pre-norm Transformer block (median of 7)."""
    from deepzoo.nn.transformer import EncoderBlock

    torch.manual_seed(0)
    block = EncoderBlock(dim, heads)
    x = torch.randn(batch, seq, dim, requires_grad=True)
    times = []
    for i in range(10):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            y = block(x)
        y.float().sum().backward()
        if i >= 3:
            times.append(time.perf_counter() - start)
    return batch * seq / statistics.median(times)


def bench_attention(quick: bool = False) -> dict[str, Any]:
    """Issue #4: forward+backward throughput of an attention block (sequence 256, width 256,
    4 heads) in fp32 and bf16, and the share of the matmul peak measured in the same run."""
    from torch.utils.flop_counter import FlopCounterMode

    from deepzoo.nn.transformer import EncoderBlock

    peak = matmul_peak()
    block, x = EncoderBlock(256, 4), torch.randn(8, 256, 256, requires_grad=True)
    counter = FlopCounterMode(display=False)
    with counter:
        block(x).sum().backward()
    flops_per_token = counter.get_total_flops() / (8 * 256)
    speed = {"fp32": attention_throughput(torch.float32), "bf16": attention_throughput(torch.bfloat16)}
    return {
        "benchmark": "attention",
        "matmul_peak_gflops": peak,
        "tokens_per_s": speed,
        "gflop_per_token": flops_per_token / 1e9,
        "fraction_of_peak": {k: v * flops_per_token / 1e9 / peak[k] for k, v in speed.items()},
    }


BENCHMARKS: dict[str, Callable[[bool], dict[str, Any]]] = {
    "gpt-shakespeare": bench_gpt_shakespeare,
    "attention": bench_attention,
    "foundations": bench_foundations,
    "mnist-classifier": bench_mnist_classifier,
    "resnet-mnist": bench_resnet_mnist,
}

BENCHMARKS |= bench_generative.BENCHMARKS


def machine() -> dict[str, Any]:
    return {
        "processor": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "amx": bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()),
        "date": time.strftime("%Y-%m-%d"),
    }


def _seconds(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.1f} s"


def _accuracy_rows(name: str, result: dict[str, Any], limits: dict[float, float]) -> list[str]:
    rows = []
    for bar in (0.99, 0.995):
        limit = f"<= {limits[bar]:.0f} s" if bar in limits else ""
        rows.append(
            f"| `{name}`: time to {bar:.1%} MNIST test accuracy "
            f"| {_seconds(result[f'median_seconds_to_{bar}'])} | {limit} |"
        )
    best = statistics.median(run["best_accuracy"] for run in result["runs"])
    rows.append(f"| `{name}`: best test accuracy in the run | {best:.2%} | |")
    return rows


def table(results: dict[str, dict[str, Any]]) -> str:
    """The markdown results table of every benchmark result."""
    rows = ["| benchmark | measured (median of runs) | goal |", "| --- | --- | --- |"]
    classifier = results.get("mnist-classifier")
    if classifier:
        peak = classifier["matmul_peak_gflops"]
        for name, report in classifier["recipes"].items():
            limits = {g["accuracy"]: g["max_seconds"] for g in classifier["goals"] if g["recipe"] == name}
            rows += _accuracy_rows(name, report, limits)
            speed = report["throughput_images_per_s"]
            rows.append(
                f"| `{name}`: training images/s, bf16 / fp32 | {speed['bf16']:.0f} / "
                f"{speed['fp32']:.0f} ({report['bf16_speedup']:.2f}x) | |"
            )
            rows.append(
                f"| `{name}`: share of the matmul peak, bf16 / fp32 | "
                f"{report['fraction_of_bf16_peak']:.1%} of {peak['bf16']:.0f} GFLOP/s / "
                f"{report['fraction_of_fp32_peak_in_fp32']:.1%} of {peak['fp32']:.0f} GFLOP/s | |"
            )
    resnet = results.get("resnet-mnist")
    if resnet:
        rows += _accuracy_rows("resnet-mnist", resnet, {})
    gpt = results.get("gpt-shakespeare")
    if gpt:
        rows.append(
            f"| `gpt-shakespeare`: time to validation loss 1.88 nats/char "
            f"({gpt['runs_reaching_1.88']}/{len(gpt['runs'])} runs reach it) "
            f"| {_seconds(gpt['median_seconds_to_1.88'])} | <= {gpt['goal_seconds']:.0f} s |"
        )
        five = gpt["five_minute_run"]
        rows.append(
            f"| `gpt-shakespeare`: best validation loss in 5 minutes ({five['steps']} steps) "
            f"| {five['best_val_loss']:.3f} nats/char | |"
        )
    attention = results.get("attention")
    if attention:
        speed, share = attention["tokens_per_s"], attention["fraction_of_peak"]
        rows.append(
            f"| attention block fwd+bwd (seq 256, width 256, 4 heads), fp32 / bf16 | "
            f"{speed['fp32']:.0f} / {speed['bf16']:.0f} tokens/s ({share['fp32']:.1%} / "
            f"{share['bf16']:.1%} of the matmul peak) | |"
        )
    foundations = results.get("foundations")
    if foundations:
        for name, row in foundations["recipes"].items():
            value = f"{row['value']:.2%}" if row["metric"] == "accuracy" else f"{row['value']:.3f} nats/char"
            extra = ", ".join(f"{k} = {v:g}" for k, v in row["extra"].items())
            rows.append(
                f"| `{name}`: {row['metric']} ({row['steps']} steps, {row['wall_seconds']:.0f} s wall"
                f"{'; ' + extra if extra else ''}) | {value} | {row['expected']} |"
            )
    rows += bench_generative.table_rows(results)
    return "\n".join(rows) + "\n"


def run_benchmarks(names: list[str], results_dir: Path, quick: bool = False) -> None:
    """Run `names`, write results_dir/NAME.json, the table, and README.md's results section."""
    results_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        result = BENCHMARKS[name](quick) | {"machine": machine(), "quick": quick}
        ckpt.write_json(results_dir / f"{name}.json", result)
        print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))
    results = {
        path.stem: json.loads(path.read_text())
        for path in sorted(results_dir.glob("*.json"))
        if path.stem in BENCHMARKS
    }
    markdown = table(results)
    ckpt.write_bytes(results_dir / "README.md", ("# Benchmark results\n\n" + markdown).encode())
    readme = Path("README.md")
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    if readme.exists() and start in readme.read_text():
        text = readme.read_text()
        head, rest = text.split(start, 1)
        tail = rest.split(end, 1)[1]
        ckpt.write_bytes(readme, f"{head}{start}\n{markdown}{end}{tail}".encode())
    print(markdown)
