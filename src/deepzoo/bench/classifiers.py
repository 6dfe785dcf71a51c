"""Benchmarks of the classifier family and the course foundations (issues #2 and #3), and of the
regularization the course lists (augmentation, cutout, mixup, label smoothing) and transfer
learning on little data."""

from __future__ import annotations

import math
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from deepzoo.bench.registry import register, seconds
from deepzoo.bench.timing import (
    first_time_at,
    last_eval,
    matmul_peak,
    train_flops_per_example,
    train_variant,
)
from deepzoo.train.logging import read_metrics


def training_throughput(recipe_name: str, precision: str, steps: int, **train: Any) -> float:
    """Examples per second of `steps` training steps of a recipe (no evaluation; the first quarter
    of the steps is a warm-up that is not timed); `train` overrides more train fields."""
    from deepzoo.recipes import get_recipe

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        train_variant(
            recipe_name,
            run_dir,
            evaluate=False,
            steps=steps,
            log_every=max(1, steps // 4),
            precision=precision,
            eval_every=10**9,
            checkpoint_every=10**9,
            progress=False,
            target="",
            keep_best="",
            patience=0,
            **train,
        )
        records = read_metrics(run_dir / "metrics.jsonl")
    batch_size = train.get("batch_size", get_recipe(recipe_name).default.train.batch_size)
    return throughput(records, batch_size)


def throughput(records: list[dict[str, Any]], batch_size: int) -> float:
    """Examples per second between the first and the last training log record: the steps between
    them times batch_size over the time between them (the first window, with its one-off start-up
    costs, is not counted)."""
    logs = [r for r in records if r["split"] == "train"]
    return (logs[-1]["step"] - logs[0]["step"]) * batch_size / (logs[-1]["time"] - logs[0]["time"])


def time_to_accuracy(
    recipe_name: str,
    bars: tuple[float, ...],
    repeats: int,
    max_seconds: float,
    metric: str = "accuracy",
    higher_is_better: bool = True,
) -> dict[str, Any]:
    """Train `repeats` times (seeds 0..), each until the hardest bar of `metric` or `max_seconds`."""
    runs = []
    for seed in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            result, _ = train_variant(
                recipe_name,
                Path(tmp) / "r",
                seed=seed,
                target=f"{metric}>={max(bars)}" if higher_is_better else f"{metric}<={min(bars)}",
                max_seconds=max_seconds,
                progress=False,
            )
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
    return {"recipe": recipe_name, "runs": runs} | bar_summary(runs, bars)


def bar_summary(runs: list[dict[str, Any]], bars: tuple[float, ...]) -> dict[str, Any]:
    """Per bar: the median over runs of the seconds to reach it and how many runs reach it. A run
    that never reaches the bar (None) counts as infinitely slow, so the median is a time (not
    None) only when more than half the runs reach it."""
    summary = {}
    for bar in bars:
        times = [math.inf if run[f"seconds_to_{bar}"] is None else run[f"seconds_to_{bar}"] for run in runs]
        median = statistics.median(times)
        summary[f"median_seconds_to_{bar}"] = None if math.isinf(median) else median
        summary[f"runs_reaching_{bar}"] = sum(math.isfinite(t) for t in times)
    return summary


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


def within(seconds: float | None, limit: float) -> bool:
    """A time to a bar (None: never reached) at or under its limit."""
    return seconds is not None and seconds <= limit


def _classifier_met(r: dict[str, Any]) -> bool:
    """Every goal of CLASSIFIER_GOALS: the recipe's median time to its bar within the limit."""
    return all(
        within(r["recipes"][name][f"median_seconds_to_{bar}"], limit) for name, bar, limit in CLASSIFIER_GOALS
    )


def bench_mnist_classifier(quick: bool, results: Path) -> dict[str, Any]:
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
        goal["met"] = within(goal["median_seconds"], goal["max_seconds"])
    return {
        "benchmark": "mnist-classifier",
        "matmul_peak_gflops": peak,
        "goals": goals,
        "recipes": recipes,
    }


def bench_resnet_mnist(quick: bool, results: Path) -> dict[str, Any]:
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


def bench_foundations(quick: bool, results: Path) -> dict[str, Any]:
    """Issue #3: each course-foundation recipe trained once with its defaults: the final test metric
    (full MNIST test set; tiny-shakespeare validation split, nats/char) and the wall time of the
    whole `train` call (data loading and kNN cross-validation included)."""
    from deepzoo.recipes import get_recipe

    results = {}
    for name, metric, expected in FOUNDATION_GOALS:
        train: dict[str, Any] = {"progress": False}
        if quick:
            train |= {"steps": min(get_recipe(name).default.train.steps, 20), "eval_every": 20}
        with tempfile.TemporaryDirectory() as tmp:
            result, wall = train_variant(name, Path(tmp) / "r", **train)
        results[name] = {
            "metric": metric,
            "value": result.metrics[metric],
            "best": result.best.get("value"),
            "extra": {k: v for k, v in result.metrics.items() if k not in (metric, "error")},
            "steps": result.step,
            "wall_seconds": wall,
            "expected": expected,
        }
    return {"benchmark": "foundations", "recipes": results}


REGULARIZED_IMAGES = 1000
"""Training images of the regularization benchmark: little data, where regularization matters."""
GOAL_VARIANTS = ("translate 2", "all four")
REGULARIZATION_GAIN = 0.005
"""Goal: translations, and all four together, add >= 0.5 points of test accuracy (median over
seeds of the paired difference to no regularization)."""


def regularization_variants() -> dict[str, Any]:
    from deepzoo.models.classifier import Regularization

    return {
        "none": Regularization(),
        "rotate 10, scale 0.1": Regularization(rotate=10.0, scale=0.1),
        "translate 2": Regularization(translate=2),
        "cutout 8": Regularization(cutout=8),
        "mixup 0.2": Regularization(mixup=0.2),
        "label smoothing 0.1": Regularization(label_smoothing=0.1),
        "all four": Regularization(translate=2, cutout=8, mixup=0.2, label_smoothing=0.1),
        "all four, rotate 10, scale 0.1": Regularization(
            rotate=10.0, scale=0.1, translate=2, cutout=8, mixup=0.2, label_smoothing=0.1
        ),
    }


def _regularization_goals(gains: dict[str, float]) -> dict[str, bool]:
    """{goal variant measured: its median gain reaches REGULARIZATION_GAIN}."""
    return {name: gains[name] >= REGULARIZATION_GAIN for name in GOAL_VARIANTS if name in gains}


def _regularization_met(r: dict[str, Any]) -> bool:
    return all(_regularization_goals(r["median_gain"]).values())


def paired_gains(accuracy: dict[str, list[float]], baseline: str = "none") -> dict[str, float]:
    """{variant: accuracies by seed} -> {variant: median over seeds of its accuracy - baseline's}."""
    base = accuracy[baseline]
    return {
        name: statistics.median(a - b for a, b in zip(values, base, strict=True))
        for name, values in accuracy.items()
        if name != baseline
    }


def bench_regularization(quick: bool, results: Path) -> dict[str, Any]:
    """cnn-mnist (its default schedule, 900 steps of 128: about 115 epochs) trained on the first
    1,000 training images under each regularization in `regularization_variants`, seeds 0-2 (quick:
    seed 0, 50 steps, no regularization and all four); the final accuracy on the whole test set.
    "all four": translations, cutout, mixup and label smoothing."""
    from deepzoo.recipes import get_recipe

    default = get_recipe("cnn-mnist").default
    variants = regularization_variants()
    if quick:
        variants = {k: v for k, v in variants.items() if k in ("none", "all four")}
    seeds = (0,) if quick else (0, 1, 2)
    accuracy: dict[str, list[float]] = {name: [] for name in variants}
    seconds_: dict[str, list[float]] = {name: [] for name in variants}
    for seed in seeds:
        for name, regularize in variants.items():
            config = replace(
                default, train_limit=REGULARIZED_IMAGES, model=replace(default.model, regularize=regularize)
            )
            steps = 50 if quick else config.train.steps
            with tempfile.TemporaryDirectory() as tmp:
                result, _ = train_variant(
                    "cnn-mnist", Path(tmp) / "r", config=config, seed=seed, steps=steps,
                    eval_every=steps, checkpoint_every=steps, progress=False,
                )  # fmt: skip
                train_seconds = last_eval(Path(tmp) / "r")["time"]
            accuracy[name].append(result.metrics["accuracy"])
            seconds_[name].append(train_seconds)
    gains = paired_gains(accuracy)
    return {
        "benchmark": "regularization", "images": REGULARIZED_IMAGES, "seeds": list(seeds),
        "steps": steps, "accuracy": accuracy, "train_seconds": seconds_,
        "median_accuracy": {name: statistics.median(a) for name, a in accuracy.items()},
        "median_gain": gains, "goals": _regularization_goals(gains),
    }  # fmt: skip


TRANSFER_IMAGES = 100  # labelled images of the new digits: the small-data regime transfer is for
TRANSFER_GAIN = 0.01  # goal: fine-tuning beats training from scratch by >= 1 point (median over seeds)
PRETRAIN_DIGITS, NEW_DIGITS = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)


def bench_transfer(quick: bool, results: Path) -> dict[str, Any]:
    """Transfer learning on MNIST: cnn-mnist pretrained on the digits 0-4 (its default 900 steps),
    then trained on the first 100 training images of the digits 5-9 (300 full-batch steps) from
    scratch, as a frozen feature extractor with a new head, and fine-tuned whole with a new head;
    accuracy on the test images of 5-9, seeds 0-2 (each seed pretrains its own network). Quick:
    seed 0, 50 pretraining and 20 transfer steps."""
    from deepzoo.recipes import get_recipe
    from deepzoo.recipes.classifiers import Transfer

    default = get_recipe("cnn-mnist").default
    seeds = (0,) if quick else (0, 1, 2)
    pretrain_steps, steps = (50, 20) if quick else (default.train.steps, 300)
    modes = {"scratch": None, "frozen features, new head": "head", "fine-tuned, new head": "all"}
    accuracy: dict[str, list[float]] = {name: [] for name in modes}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            pretrained = Path(tmp) / f"pretrained-{seed}"
            config = replace(default, classes=PRETRAIN_DIGITS)
            train_variant(
                "cnn-mnist", pretrained, config=config, seed=seed, steps=pretrain_steps,
                eval_every=pretrain_steps, checkpoint_every=pretrain_steps, progress=False,
            )  # fmt: skip
            for name, mode in modes.items():
                transfer = Transfer(str(pretrained), train=mode) if mode else Transfer()
                config = replace(default, classes=NEW_DIGITS, train_limit=TRANSFER_IMAGES, transfer=transfer)
                result, _ = train_variant(
                    "cnn-mnist", Path(tmp) / f"{seed}-{mode}", config=config, seed=seed, steps=steps,
                    batch_size=TRANSFER_IMAGES, eval_every=steps, checkpoint_every=steps, progress=False,
                )  # fmt: skip
                accuracy[name].append(result.metrics["accuracy"])
    gains = paired_gains(accuracy, baseline="scratch")
    return {
        "benchmark": "transfer", "pretrain_digits": list(PRETRAIN_DIGITS), "new_digits": list(NEW_DIGITS),
        "images": TRANSFER_IMAGES, "pretrain_steps": pretrain_steps, "steps": steps, "seeds": list(seeds),
        "accuracy": accuracy, "median_accuracy": {name: statistics.median(a) for name, a in accuracy.items()},
        "median_gain": gains,
    }  # fmt: skip


def _transfer_met(r: dict[str, Any]) -> bool:
    return r["median_gain"]["fine-tuned, new head"] >= TRANSFER_GAIN


def _median_rows(r: dict[str, Any], label: Callable[[str], str], goal: Callable[[str], str]) -> list[str]:
    """One table row per variant of a seeds benchmark: its median accuracy and its median paired
    gain over the baseline (none for the baseline itself), described by label(name) and goal(name)."""
    rows = []
    for name, median in r["median_accuracy"].items():
        gain = r["median_gain"].get(name)
        change = "" if gain is None else f" ({gain * 100:+.2f} points)"
        rows.append(f"| {label(name)} | {median:.2%}{change} | {goal(name)} |")
    return rows


def _transfer_rows(r: dict[str, Any]) -> list[str]:
    met = f">= +{TRANSFER_GAIN * 100:.0f} point over scratch: {'met' if r['met'] else 'not met'}"
    return _median_rows(
        r,
        lambda name: (
            f"`cnn-mnist` pretrained on digits 0-4, {r['images']} images of 5-9, {name}: test "
            f"accuracy on 5-9 (median of {len(r['seeds'])} seeds)"
        ),
        lambda name: met if name == "fine-tuned, new head" else "",
    )


def _regularization_rows(r: dict[str, Any]) -> list[str]:
    goals = _regularization_goals(r["median_gain"])

    def goal(name: str) -> str:
        if name not in goals:
            return ""
        return f">= +{REGULARIZATION_GAIN * 100:.1f} points: {'met' if goals[name] else 'not met'}"

    return _median_rows(
        r,
        lambda name: (
            f"`cnn-mnist` on {r['images']:,} training images, {name}: test accuracy "
            f"({r['steps']} steps, median of {len(r['seeds'])} seeds)"
        ),
        goal,
    )


def _accuracy_rows(name: str, result: dict[str, Any], limits: dict[float, float]) -> list[str]:
    rows = []
    for bar in (0.99, 0.995):
        limit = f"<= {limits[bar]:.0f} s" if bar in limits else ""
        rows.append(
            f"| `{name}`: time to {bar:.1%} MNIST test accuracy "
            f"| {seconds(result[f'median_seconds_to_{bar}'])} | {limit} |"
        )
    best = statistics.median(run["best_accuracy"] for run in result["runs"])
    rows.append(f"| `{name}`: best test accuracy in the run | {best:.2%} | |")
    return rows


def _classifier_rows(classifier: dict[str, Any]) -> list[str]:
    rows = []
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
    return rows


def _foundation_rows(foundations: dict[str, Any]) -> list[str]:
    rows = []
    for name, row in foundations["recipes"].items():
        value = f"{row['value']:.2%}" if row["metric"] == "accuracy" else f"{row['value']:.3f} nats/char"
        extra = ", ".join(f"{k} = {v:g}" for k, v in row["extra"].items())
        rows.append(
            f"| `{name}`: {row['metric']} ({row['steps']} steps, {row['wall_seconds']:.0f} s wall"
            f"{'; ' + extra if extra else ''}) | {value} | {row['expected']} |"
        )
    return rows


register(
    "mnist-classifier",
    "cnn-mnist and cnn-mnist-wide: time to 99% / 99.5%, images/s, share of the matmul peak",
    bench_mnist_classifier,
    _classifier_rows,
    _classifier_met,
)
register(
    "resnet-mnist",
    "resnet-mnist: time to 99% / 99.5% and best test accuracy",
    bench_resnet_mnist,
    lambda result: _accuracy_rows("resnet-mnist", result, {}),
)
register(
    "regularization",
    "cnn-mnist on 1,000 images: rotations and zooms, translations, cutout, mixup, label smoothing (~16 min)",
    bench_regularization,
    _regularization_rows,
    _regularization_met,
)
register(
    "transfer",
    "cnn-mnist pretrained on digits 0-4, 100 images of 5-9: scratch, frozen features, fine-tuned (~5 min)",
    bench_transfer,
    _transfer_rows,
    _transfer_met,
)
register(
    "foundations",
    "kNN, linear SVM/softmax, two-layer net, char-LSTM: final metrics with their defaults",
    bench_foundations,
    _foundation_rows,
)
