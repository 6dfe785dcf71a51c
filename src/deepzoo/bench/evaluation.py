"""How fast a whole split is evaluated: the batch size of the evaluation passes (EVAL_BATCH)
against the others, for the networks whose evaluations take longest."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

from deepzoo.bench.registry import register
from deepzoo.bench.timing import median_seconds
from deepzoo.data.tensors import EVAL_BATCH

BATCHES = (32, 64, 128, 256, 500, 1000)
TOLERANCE = 1.10
"""EVAL_BATCH meets the goal when its time is within 10% of the fastest batch size's."""


def _passes(images: torch.Tensor) -> dict[str, Callable[[int], Any]]:
    """name -> f(batch size): one evaluation pass over `images` (N, 1, 28, 28) in [0, 1], as the
    recipes make it (untrained networks at their recipe's default size: time does not depend on
    the weights)."""
    from deepzoo.data.tensors import TensorData
    from deepzoo.metrics.classification import predict
    from deepzoo.metrics.fid import extract_features
    from deepzoo.models.features import mnist_feature_net
    from deepzoo.recipes import get_recipe
    from deepzoo.recipes.likelihood import mean_bits_per_dim, mean_nats

    def build(name: str) -> torch.nn.Module:
        recipe = get_recipe(name)
        return recipe.build(recipe.default).eval()

    data = TensorData({"x": images, "y": torch.zeros(len(images), dtype=torch.int64)})
    binary = TensorData({"x": (images > 0.5).float(), "y": data.tensors["y"]})
    feature_net, resnet, vqvae = mnist_feature_net(), build("resnet-mnist"), build("vqvae-mnist")
    glow, pixelcnn = build("glow-mnist"), build("pixelcnn-mnist")

    @torch.no_grad()
    def encode(batch: int) -> None:
        for b in data.batches(batch):
            vqvae.encode(b["x"])

    return {
        "classifier-FID features (the shipped CNN)": lambda b: extract_features(feature_net, images, b),
        "resnet-mnist predictions": lambda b: predict(resnet, data, b),
        "vqvae-mnist codes": encode,
        "glow-mnist bits/dim": lambda b: mean_bits_per_dim(glow, data, b),
        "pixelcnn-mnist NLL": lambda b: mean_nats(pixelcnn, binary, b),
    }


def summarise(per_batch: dict[int, float], chosen: int = EVAL_BATCH) -> dict[str, Any]:
    """{batch size: seconds} -> the times, the fastest size and chosen's time / the fastest's."""
    best = min(per_batch, key=per_batch.get)
    return {
        "seconds_per_1000": {str(b): s for b, s in per_batch.items()},
        "best_batch": best,
        "ratio_to_best": per_batch[chosen] / per_batch[best],
    }


def bench_eval_batch(quick: bool, results: Path) -> dict[str, Any]:
    """Seconds per 1,000 test images of each evaluation pass at each batch size in BATCHES: the
    median over 3 rounds (1 quick) of the median of 2 passes (1 quick) over 1,000 test images, each
    after a warm-up pass; the batch sizes interleaved within a round so that all see the same
    machine load."""
    from deepzoo.data.mnist import load_mnist

    n, rounds, repeats = (1000, 1, 1) if quick else (1000, 3, 2)
    images = load_mnist("test").tensors["x"][:n]
    torch.manual_seed(0)
    passes = _passes(images)
    nets = {}
    for name, evaluate in passes.items():
        times: dict[int, list[float]] = {b: [] for b in BATCHES}
        for _ in range(rounds):
            for b in BATCHES:
                times[b].append(median_seconds(partial(evaluate, b), repeats) * 1000 / n)
        nets[name] = summarise({b: statistics.median(t) for b, t in times.items()})
    return {"eval_batch": EVAL_BATCH, "images": n, "rounds": rounds, "nets": nets}


def _near_best(net: dict[str, Any]) -> bool:
    """EVAL_BATCH within TOLERANCE of the fastest batch size for this pass."""
    return net["ratio_to_best"] <= TOLERANCE


def _rows(r: dict[str, Any]) -> list[str]:
    rows = []
    for name, net in r["nets"].items():
        times = net["seconds_per_1000"]
        slowest = max(times, key=times.get)
        rows.append(
            f"| {name}: s per 1,000 images at batch {r['eval_batch']} (EVAL_BATCH) / the fastest "
            f"({net['best_batch']}) / the slowest ({slowest}) | {times[str(r['eval_batch'])]:.2f} / "
            f"{times[str(net['best_batch'])]:.2f} / {times[slowest]:.2f} ({net['ratio_to_best']:.2f}x the "
            f"fastest) | <= {TOLERANCE:.2f}x the fastest: "
            f"{'met' if _near_best(net) else 'not met'} |"
        )
    return rows


register(
    "eval-batch",
    "evaluation passes over a split (features, predictions, codes, likelihoods) at batch sizes "
    "32-1000 against EVAL_BATCH (~5 min)",
    bench_eval_batch,
    _rows,
    lambda r: all(_near_best(net) for net in r["nets"].values()),
)
