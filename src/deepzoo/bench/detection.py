"""Benchmarks of the detection and segmentation family (issue #15): semantic segmentation of the
MNIST test scenes by `unet-scenes` and `fcn-scenes`, each in its 10-minute budget."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from deepzoo.bench.registry import register
from deepzoo.bench.timing import train_variant

GOAL = 0.85
"""mIoU (11 classes) of the better of the two networks, in 10 CPU minutes."""


def _segment(name: str, quick: bool, results: Path) -> dict[str, Any]:
    from deepzoo.train.logging import read_metrics

    with tempfile.TemporaryDirectory() as tmp:
        result, wall = train_variant(name, Path(tmp) / name, quick=quick)
        evals = [r for r in read_metrics(result.run_dir / "metrics.jsonl") if r["split"] == "eval"]
        shutil.copy(result.run_dir / "samples" / "segmentation.png", results / f"{name}.png")
    keys = ("miou", "pixel_accuracy", "mean_accuracy", "background_iou", "worst_digit_iou")
    return {
        "steps": result.step, "train_seconds": evals[-1]["time"], "wall_seconds": wall,
        "final": {k: evals[-1][k] for k in keys},
        "curve": [{"step": r["step"], "seconds": r["time"], "miou": r["miou"]} for r in evals],
    }  # fmt: skip


def bench_segmentation(quick: bool, results: Path) -> dict[str, Any]:
    """unet-scenes and fcn-scenes with their defaults (3,500 steps or 10 minutes): mIoU, pixel
    accuracy and the worst digit's IoU on 2,000 test scenes; pictures of 8 test scenes."""
    runs = {name: _segment(name, quick, results) for name in ("unet-scenes", "fcn-scenes")}
    best = max(r["final"]["miou"] for r in runs.values())
    return {"runs": runs, "best_miou": best, "goal": GOAL, "met": best >= GOAL}


def _segmentation_rows(r: dict[str, Any]) -> list[str]:
    rows = []
    for name, run in r["runs"].items():
        f = run["final"]
        rows.append(
            f"| `{name}` mIoU on 2,000 test scenes (11 classes; {run['steps']} steps, "
            f"{run['train_seconds']:.0f} s; pixel accuracy {f['pixel_accuracy']:.2%}, worst digit IoU "
            f"{f['worst_digit_iou']:.3f}) | {f['miou']:.3f} | >= {r['goal']} (the better of the two) |"
        )
    return rows


register(
    "segmentation",
    "unet-scenes and fcn-scenes: test mIoU after their 10-minute budgets (~22 min)",
    bench_segmentation,
    _segmentation_rows,
)
