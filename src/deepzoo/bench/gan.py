"""Benchmarks of the GAN family (issue #11): each recipe under the diffusion family's CPU budget,
then classifier-FID, label-histogram entropy (and label accuracy for cgan) of 10,000 samples,
with the FID curve over training."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from deepzoo.bench.registry import register
from deepzoo.bench.timing import train_variant

GOALS = {"dcgan-mnist": ("fid", "<=", 30.0), "wgan-gp-mnist": ("fid", "<=", 40.0),
         "cgan-mnist": ("label_accuracy", ">=", 0.97), "scgan-mnist": ("fid", "<=", 30.0),
         "wgan-gp-mnist --model.clusters 50": ("fid", "<=", 40.0)}  # fmt: skip
"""Issue #11's goals; the self-conditioned rows are held to their unconditional recipe's."""
RUNS: dict[str, tuple[str, dict[str, Any]]] = {
    name: (name, {})
    for name in ("gan-mnist", "dcgan-mnist", "cgan-mnist", "scgan-mnist", "wgan-mnist", "wgan-gp-mnist")
} | {"wgan-gp-mnist --model.clusters 50": ("wgan-gp-mnist", {"clusters": 50})}
"""Row name -> (recipe, model fields replaced in its default)."""


def _row_met(name: str, row: dict[str, Any]) -> bool:
    """The row's measured metric on the right side of its goal in GOALS."""
    metric, sense, goal = GOALS[name]
    return row[metric] <= goal if sense == "<=" else row[metric] >= goal


def _gan_met(report: dict[str, Any]) -> bool:
    return all(_row_met(name, row) for name, row in report["models"].items() if name in GOALS)


def _final_quality(model: torch.nn.Module, n: int) -> dict[str, float]:
    """classifier-FID against the MNIST test split, label entropy (and, conditional, label
    accuracy) of n samples drawn 500 at a time from a seeded generator."""
    from deepzoo.data.mnist import load_mnist
    from deepzoo.metrics.fid import sample_quality

    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        samples = torch.cat([model.sample(min(500, n - i), generator=generator) for i in range(0, n, 500)])
    labels = torch.arange(n) % 10 if model.conditional else None
    return sample_quality(samples, load_mnist("test").tensors["x"], labels)


def plot_fid_curves(models: dict[str, Any], path: Path) -> None:
    """Each row's FID curve against training seconds, FID on a log scale (it spans 10 to 2,000)."""
    from deepzoo.viz import plot_lines

    curves = {
        name: ([c["seconds"] for c in r["curve"]], [c["fid"] for c in r["curve"]])
        for name, r in models.items()
    }
    plot_lines({"classifier-FID (2,000 samples)": curves}, path, "training seconds", log_y=True)


def bench_gan(quick: bool, results: Path) -> dict[str, Any]:
    """Issue #11: every GAN recipe trained for its 300 CPU seconds (evaluation time excluded),
    evaluated every 400 steps on 2,000 samples (the curve), then on 10,000 at the end."""
    from deepzoo.recipes import get_recipe, load_run
    from deepzoo.recipes.gan import BUDGET_SECONDS
    from deepzoo.train.logging import read_metrics

    n = 500 if quick else 10_000
    models: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, (recipe, fields)) in enumerate(RUNS.items()):
            default = get_recipe(recipe).default
            config = replace(
                default,
                model=replace(default.model, **fields),
                eval=replace(default.eval, samples=500 if quick else 2000),
            )
            every = 25 if quick else 400
            result, wall = train_variant(
                recipe,
                Path(tmp) / str(i),
                quick=quick,
                config=config,
                eval_every=every,
                checkpoint_every=every,
            )
            evals = [r for r in read_metrics(result.run_dir / "metrics.jsonl") if r["split"] == "eval"]
            row = {"steps": result.step, "train_seconds": evals[-1]["time"], "wall_seconds": wall}
            row["curve"] = [{"step": r["step"], "seconds": r["time"], "fid": r["fid"]} for r in evals]
            row |= _final_quality(load_run(result.run_dir).model, n) | {"samples": n}
            if name in GOALS:
                metric, sense, goal = GOALS[name]
                row |= {"goal": f"{metric} {sense} {goal:g}", "met": _row_met(name, row)}
            models[name] = row
    plot_fid_curves(models, results / "gan_fid_curve.png")
    return {"budget_seconds": BUDGET_SECONDS, "samples": n, "models": models}


def _gan_rows(report: dict[str, Any]) -> list[str]:
    rows = []
    for name, r in report["models"].items():
        measured = f"{r['fid']:.1f} / {r['label_entropy']:.2f}"
        head = f"`{name}` ({r['steps']} steps, {r['train_seconds']:.0f} s): classifier-FID / label entropy"
        if "label_accuracy" in r:
            head, measured = head + " / label accuracy", measured + f" / {r['label_accuracy']:.2%}"
        goal = r.get("goal", "")
        rows.append(f"| {head}, {r['samples']} samples | {measured} | {goal} |")
    return rows


register(
    "gan",
    "gan/dcgan/cgan/scgan/wgan/wgan-gp (and with clusters) at the diffusion CPU budget: FID, curve (~45 min)",
    bench_gan,
    _gan_rows,
    _gan_met,
)
