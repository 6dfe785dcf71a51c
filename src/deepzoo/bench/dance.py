"""Benchmark of the music-to-dance family (issue #18, Bailando): the three stages on the synthetic
music-dance set, and the dances of the GPT before and after the actor-critic for held-out music."""

from __future__ import annotations

import statistics
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from deepzoo.bench.registry import register
from deepzoo.bench.timing import train_variant

SEEDS = (0, 1, 2)
"""Sampling seeds of the evaluation: one dance per test song for each, medians reported."""
KEYS = ("bas", "fid_k", "fid_g", "diversity_k", "diversity_g")


def _last_eval(run_dir: Path) -> dict[str, Any]:
    from deepzoo.train.logging import read_metrics

    return [r for r in read_metrics(run_dir / "metrics.jsonl") if r["split"] == "eval"][-1]


def _dances(policy, music: torch.Tensor, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.cat([policy.generate(m, generator) for m in music.split(50)])


def _quality(policy, test, seeds: tuple[int, ...]) -> dict[str, Any]:
    """Medians over `seeds` of dance_quality of one dance per test song, and each seed's values."""
    from deepzoo.recipes.dance import dance_quality

    motion, music, beats = test.tensors["motion"], test.tensors["music"], test.tensors["beats"]
    runs = []
    for seed in seeds:
        dances = _dances(policy, music, seed)
        runs.append(dance_quality(dances, motion, beats[:, : dances.shape[1]]))
    return {k: statistics.median(r[k] for r in runs) for k in KEYS} | {"per_seed": runs}


def bench_dance(quick: bool, results: Path) -> dict[str, Any]:
    """`dance-vqvae`, `dance-gpt` over it and `dance-ac` from that GPT, each with its recipe's
    defaults and CPU budget (wall time of each stage reported); then, over the 100 held-out songs,
    the Beat Align Score, FID_k, FID_g and diversity of (a) the ground truth, (b) the GPT's dances
    and (c) the fine-tuned GPT's, medians over three sampling seeds (one dance per song each).
    Goal (the issue's): (c) has a higher Beat Align Score than (b) with FID_k at most 10% above
    (b)'s. Also the VQ-VAE's reconstructions (MPJPE, FID_k, BAS) and the GPT's test nats per code."""
    from deepzoo.recipes import get_recipe, load_run
    from deepzoo.recipes.dance import dance_quality

    stages: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        vq, wall = train_variant("dance-vqvae", root / "vq", quick=quick)
        record = _last_eval(vq.run_dir)
        stages["dance-vqvae"] = {k: record[k] for k in ("mpjpe", "fid_k", "bas")} | {
            "steps": vq.step, "train_seconds": record["time"], "wall_seconds": wall,
        }  # fmt: skip
        gpt_config = replace(get_recipe("dance-gpt").default, vqvae_run=str(vq.run_dir))
        gpt, wall = train_variant("dance-gpt", root / "gpt", quick=quick, config=gpt_config)
        record = _last_eval(gpt.run_dir)
        stages["dance-gpt"] = {"val_loss": record["val_loss"], "steps": gpt.step,
                               "train_seconds": record["time"], "wall_seconds": wall}  # fmt: skip
        ac_config = replace(get_recipe("dance-ac").default, gpt_run=str(gpt.run_dir))
        ac, wall = train_variant("dance-ac", root / "ac", quick=quick, config=ac_config)
        record = _last_eval(ac.run_dir)
        stages["dance-ac"] = {"reward": record["reward"], "kl": record["kl"], "steps": ac.step,
                              "train_seconds": record["time"], "wall_seconds": wall}  # fmt: skip
        loaded = load_run(ac.run_dir)
        test = get_recipe("dance-ac").data(loaded.config, torch.device("cpu"))[1]
        seeds = SEEDS[:1] if quick else SEEDS
        with torch.no_grad():
            before = _quality(load_run(gpt.run_dir).model, test, seeds)
            after = _quality(loaded.model.policy, test, seeds)
    motion, beats = test.tensors["motion"], test.tensors["beats"]
    truth = dance_quality(motion, motion, beats)
    return {
        "stages": stages, "ground_truth": {k: truth[k] for k in ("bas", "diversity_k", "diversity_g")},
        "gpt": before, "actor_critic": after, "seeds": list(seeds),
        "goal": "actor-critic BAS > GPT BAS and FID_k <= 1.1 x GPT FID_k",
    }  # fmt: skip


def _dance_met(report: dict[str, Any]) -> bool:
    """The fine-tuned dances keep to the beat better than the GPT's, their FID_k within 10%."""
    before, after = report["gpt"], report["actor_critic"]
    return after["bas"] > before["bas"] and after["fid_k"] <= 1.1 * before["fid_k"]


def _dance_rows(report: dict[str, Any]) -> list[str]:
    s, t, b, a = report["stages"], report["ground_truth"], report["gpt"], report["actor_critic"]
    v = s["dance-vqvae"]
    rows = [
        f"| `dance-vqvae` ({v['steps']} steps, {v['wall_seconds']:.0f} s wall): reconstructions of the 100 "
        f"test dances, MPJPE (m) / FID_k / BAS | {v['mpjpe']:.3f} / {v['fid_k']:.1f} / {v['bas']:.3f} | "
        f"ground truth BAS {t['bas']:.3f} |",
        f"| `dance-gpt` ({s['dance-gpt']['steps']} steps, {s['dance-gpt']['wall_seconds']:.0f} s wall): "
        f"dances for held-out music, BAS / FID_k / FID_g / diversity_k (median of {len(report['seeds'])} "
        f"seeds) | {b['bas']:.3f} / {b['fid_k']:.1f} / {b['fid_g']:.1f} / {b['diversity_k']:.2f} | "
        f"ground truth: BAS {t['bas']:.3f}, diversity_k {t['diversity_k']:.2f} |",
        f"| `dance-ac` ({s['dance-ac']['steps']} steps, {s['dance-ac']['wall_seconds']:.0f} s wall, KL "
        f"{s['dance-ac']['kl']:.1f} nats): the same | {a['bas']:.3f} / {a['fid_k']:.1f} / {a['fid_g']:.1f} / "
        f"{a['diversity_k']:.2f} | {report['goal']}: {'met' if report['met'] else 'not met'} |",
    ]
    return rows


register(
    "dance",
    "dance-vqvae, dance-gpt, dance-ac on the synthetic dance set; BAS / FID_k / FID_g, GPT vs AC (~20 min)",
    bench_dance,
    _dance_rows,
    _dance_met,
)
