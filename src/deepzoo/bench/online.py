"""Benchmark of online action detection (issue #16): lstm-streams, trn-streams and idn-streams,
each with its defaults (about the same parameter count, 5 CPU minutes of training), evaluated
online on 32 test streams of 2,048 frames."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deepzoo.bench.registry import register
from deepzoo.bench.timing import train_recipe_report

GOAL = 0.03
"""TRN and IDN must beat the LSTM's per-frame mAP by this much (3 points), as in their papers."""

ARCHS = ("lstm", "trn", "idn")


def bench_online(quick: bool, results: Path, frames: str = "") -> dict[str, Any]:
    """The three recipes' (`{arch}-{frames}streams`) per-frame mAP, calibrated mAP, accuracy and
    mAP over each tenth of actions, with their parameter counts; a timeline of 3 test streams each;
    and the same metrics of the exact online posterior on the test streams (`bayes_filter`: the
    ceiling of every causal model)."""
    from deepzoo.models.online import online_detector
    from deepzoo.recipes import get_recipe
    from deepzoo.recipes.online import bayes_filter_metrics

    keys = ("map", "mcap", "accuracy", "worst_class_ap") + tuple(
        f"map_{10 * k:02d}_{10 * k + 10:02d}" for k in range(10)
    )
    names = [f"{arch}-{frames}streams" for arch in ARCHS]
    runs = {}
    for name in names:
        runs[name] = train_recipe_report(name, quick, results, "timeline.png", keys)
        model = online_detector(get_recipe(name).default.model)
        runs[name]["parameters"] = sum(p.numel() for p in model.parameters())
    baseline = runs[names[0]]["final"]["map"]
    gains = {name: runs[name]["final"]["map"] - baseline for name in names[1:]}
    ceiling = bayes_filter_metrics(get_recipe(names[0]).default.data)
    return {
        "runs": runs,
        "bayes_filter": ceiling,
        "gain_over_lstm": gains,
        "goal": GOAL,
    }


def _online_met(r: dict[str, Any]) -> bool:
    """Every architecture after the LSTM (TRN, IDN) beats its per-frame mAP by GOAL."""
    return min(r["gain_over_lstm"].values()) >= GOAL


def _rows(r: dict[str, Any]) -> list[str]:
    rows = []
    for name, run in r["runs"].items():
        f = run["final"]
        gain = r["gain_over_lstm"].get(name)
        goal = "baseline" if gain is None else f">= LSTM + {r['goal']:.2f} (gain {gain:+.3f})"
        rows.append(
            f"| `{name}` per-frame mAP, 32 test streams ({run['parameters']:,} parameters, "
            f"{run['steps']} steps, {run['train_seconds']:.0f} s; cmAP {f['mcap']:.3f}, first tenth "
            f"of actions {f['map_00_10']:.3f}) "
            f"| {f['map']:.3f} | {goal} |"
        )
    if "bayes_filter" in r:
        f = r["bayes_filter"]
        rows.append(
            "| the exact online posterior of the test streams (data/stream_filter.py; no training: "
            f"the ceiling of every causal model; cmAP {f['mcap']:.3f}, first tenth of actions "
            f"{f['map_00_10']:.3f}) | {f['map']:.3f} | ceiling |"
        )
    return rows


register(
    "online-detection",
    "lstm-, trn- and idn-streams: per-frame mAP after 5 CPU minutes each (~17 min)",
    bench_online,
    _rows,
    _online_met,
)
register(
    "online-detection-digits",
    "the same on MNIST-digit frames (lstm-, trn-, idn-digit-streams) (~17 min)",
    lambda quick, results: bench_online(quick, results, frames="digit-"),
    _rows,
    _online_met,
)
