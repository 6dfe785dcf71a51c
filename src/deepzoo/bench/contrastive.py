"""Benchmarks of the contrastive family (issue #13): zero-shot MNIST accuracy of clip-mnist with
held-out prompt templates, music-to-motion retrieval of clip-dance on the synthetic dance set, and
the speed of the CLIP loss against open_clip's ClipLoss (a benchmark-only peer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from deepzoo.bench.registry import register
from deepzoo.bench.timing import interleaved_speedup, train_variant

GOALS = {"clip-mnist": ("zero_shot_accuracy", 0.97), "clip-dance": ("music_to_motion_recall@1", 0.80)}
"""Issue #13: recipe -> (metric, the value its last evaluation must reach)."""


def _train_recipe(name: str, quick: bool) -> dict[str, Any]:
    """The recipe's default run; its last evaluation (whole test split / every test song) and the
    curve of its headline metric."""
    import tempfile

    from deepzoo.recipes import load_run
    from deepzoo.train.logging import read_metrics

    metric, goal = GOALS[name]
    with tempfile.TemporaryDirectory() as tmp:
        result, wall = train_variant(name, Path(tmp) / name, quick=quick)
        evals = [r for r in read_metrics(result.run_dir / "metrics.jsonl") if r["split"] == "eval"]
        load_run(result.run_dir)  # the run loads back
    last = {k: v for k, v in evals[-1].items() if isinstance(v, float)}
    return {
        "recipe": name, "metric": metric, "goal": goal, "steps": result.step, "wall_seconds": wall,
        "train_seconds": evals[-1]["time"], "final": last,
        "curve": [{"step": r["step"], "seconds": r["time"], metric: r[metric]} for r in evals],
    }  # fmt: skip


def _recipe_met(r: dict[str, Any]) -> bool:
    metric, goal = GOALS[r["recipe"]]
    return r["final"][metric] >= goal


def bench_clip_mnist(quick: bool, results: Path) -> dict[str, Any]:
    """clip-mnist: zero-shot accuracy on the 10,000 test digits, prompt ensemble of the held-out templates."""
    return _train_recipe("clip-mnist", quick)


def bench_clip_dance(quick: bool, results: Path) -> dict[str, Any]:
    """clip-dance: music-to-motion recall@1 among 100 test segments (one per held-out song), after
    building (or reading the cached) synthetic dance set."""
    return _train_recipe("clip-dance", quick)


def _recipe_rows(r: dict[str, Any]) -> list[str]:
    final, name = r["final"], r["recipe"]
    if name == "clip-mnist":
        detail = (
            f"worst single template {final['worst_template_accuracy']:.2%}, "
            f"training templates {final['train_templates_accuracy']:.2%}"
        )
    else:
        detail = (
            f"R@5 {final['music_to_motion_recall@5']:.0%}; within songs R@1 "
            f"{final['same_song_music_to_motion_recall@1']:.0%}; frame accuracy {final['frame_accuracy']:.1%}"
        )
    return [
        f"| `{name}` {r['metric']} ({r['steps']} steps, {r['train_seconds']:.0f} s; {detail}) "
        f"| {final[r['metric']]:.2%} | >= {r['goal']:.0%} |"
    ]


def bench_clip_loss_speed(quick: bool, results: Path) -> dict[str, Any]:
    """Forward + backward of the symmetric CLIP loss on B = 1024 pairs of d = 512 normalised
    embeddings, ours against open_clip's ClipLoss on the same tensors (the two losses must agree);
    15 interleaved rounds (3 quick) of the median of 5 runs; speedup = median of open_clip / ours."""
    from importlib.metadata import version

    from open_clip.loss import ClipLoss

    from deepzoo.nn.contrastive import clip_loss

    batch, dim = 1024, 512
    torch.manual_seed(0)
    a = F.normalize(torch.randn(batch, dim), dim=1).requires_grad_(True)
    b = F.normalize(torch.randn(batch, dim), dim=1).requires_grad_(True)
    scale = torch.tensor(1 / 0.07)
    peer_loss = ClipLoss()

    def step_ours() -> torch.Tensor:
        loss = clip_loss(a, b, scale)["loss"]
        loss.backward()
        return loss

    def step_peer() -> torch.Tensor:
        loss = peer_loss(a, b, scale)
        loss.backward()
        return loss

    agree = abs(step_ours().item() - step_peer().item())
    repeats, rounds = (3, 3) if quick else (5, 15)
    t_ours, t_peer, speedup = interleaved_speedup(step_ours, step_peer, repeats, rounds)
    return {
        "batch": batch, "dim": dim, "rounds": rounds, "loss_difference": agree,
        "ours_ms": 1e3 * t_ours, "peer_ms": 1e3 * t_peer,
        "speedup": speedup, "peer": f"open_clip {version('open_clip_torch')}",
    }  # fmt: skip


def _clip_loss_rows(r: dict[str, Any]) -> list[str]:
    return [
        f"| CLIP loss fwd+bwd (B {r['batch']}, d {r['dim']}), ours / {r['peer']} "
        f"| {r['ours_ms']:.2f} / {r['peer_ms']:.2f} ms ({r['speedup']:.2f}x) | >= 1x |"
    ]


register(
    "clip-mnist",
    "clip-mnist default run: zero-shot test accuracy with held-out prompt templates (~5 min)",
    bench_clip_mnist,
    _recipe_rows,
    _recipe_met,
)
register(
    "clip-dance",
    "clip-dance default run: music-to-motion recall@1 among 100 test segments (~5 min, +3 min data)",
    bench_clip_dance,
    _recipe_rows,
    _recipe_met,
)
register(
    "clip-loss-speed",
    "CLIP loss fwd+bwd (B 1024, d 512) against open_clip's ClipLoss (needs [bench]; ~1 min)",
    bench_clip_loss_speed,
    _clip_loss_rows,
    lambda r: r["speedup"] >= 1,
)
