"""Benchmark of the VQGAN family (issue #17): VQGAN against the VQ-VAE on the 64x64 MNIST scenes
at the same 8x8 code grid and the same CPU budget, then the GPT prior over each one's codes."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from deepzoo.bench.registry import register
from deepzoo.bench.timing import train_variant

TOKENIZERS = ("vqvae-scenes", "vqgan-scenes")


def _last_eval(run_dir: Path) -> dict[str, Any]:
    from deepzoo.train.logging import read_metrics

    evals = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["split"] == "eval"]
    return evals[-1]


def _floor(n: int) -> float:
    """The scene-FID between the evaluation's test scenes and as many other test scenes: what
    sampling noise alone gives a perfect sampler at this size, the floor of the stage-2 FIDs (a
    reconstruction FID pairs each scene with its own reconstruction and can go below it)."""
    from deepzoo.data.scenes import mnist_scenes
    from deepzoo.metrics.fid import scene_fid
    from deepzoo.recipes.detection import ScenesData

    d = ScenesData()
    test = mnist_scenes("test", d.test, d.seed + 1, d.scene).tensors["x"]  # the priors' reference
    other = mnist_scenes("test", n, d.seed + 2, d.scene).tensors["x"]
    return scene_fid(other, test)


def bench_vqgan(quick: bool, results: Path) -> dict[str, Any]:
    """Both tokenizers for the recipes' CPU budget (evaluation excluded): test MSE, code usage and
    reconstruction scene-FID over the 2,000 test scenes; then `vqgan-prior-scenes` over each for
    the same budget: test nats per code and the scene-FID of 1,000 decoded samples. Pictures:
    results/vqgan_reconstructions.png (test scenes, VQ-VAE, VQGAN rows) and
    results/vqgan_prior_samples.png (VQ-VAE prior, VQGAN prior rows)."""
    from deepzoo.recipes import get_recipe, load_run
    from deepzoo.recipes.vqgan import BUDGET_SECONDS
    from deepzoo.viz import save_image_grid

    stage1: dict[str, Any] = {}
    stage2: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for name in TOKENIZERS:
            result, wall = train_variant(name, Path(tmp) / name, quick=quick)
            runs[name] = result.run_dir
            record = _last_eval(result.run_dir)
            stage1[name] = {k: record[k] for k in ("mse", "rfid", "perplexity", "usage")} | {
                "steps": result.step, "train_seconds": record["time"], "wall_seconds": wall,
            }  # fmt: skip
        models = {name: load_run(run).model for name, run in runs.items()}
        scenes = get_recipe("vqgan-scenes").data(get_recipe("vqgan-scenes").default, torch.device("cpu"))[1]
        x = scenes.tensors["x"][:16]
        rows = [x] + [models[name].reconstruct(x) for name in TOKENIZERS]
        save_image_grid(torch.cat(rows), results / "vqgan_reconstructions.png", nrow=16)

        samples = []
        for name in TOKENIZERS:
            default = get_recipe("vqgan-prior-scenes").default
            config = replace(default, tokenizer_run=str(runs[name]))
            result, wall = train_variant(
                "vqgan-prior-scenes", Path(tmp) / f"prior-{name}", quick=quick, config=config
            )
            record = _last_eval(result.run_dir)
            stage2[name] = {"val_loss": record["val_loss"], "fid": record["fid"], "steps": result.step,
                            "train_seconds": record["time"], "wall_seconds": wall}  # fmt: skip
            prior = load_run(result.run_dir).model
            samples.append(prior.sample(16, generator=torch.Generator().manual_seed(0)))
        save_image_grid(torch.cat(samples), results / "vqgan_prior_samples.png", nrow=16)
    floor = _floor(100 if quick else 1000)
    return {"budget_seconds": BUDGET_SECONDS, "stage1": stage1, "prior": stage2, "sample_fid_floor": floor,
            "goal": "vqgan-scenes rfid < vqvae-scenes rfid"}  # fmt: skip


def _vqgan_rows(report: dict[str, Any]) -> list[str]:
    rows = []
    for name, r in report["stage1"].items():
        goal = report["goal"] if name == "vqgan-scenes" else ""
        rows.append(
            f"| `{name}` ({r['steps']} steps, {r['train_seconds']:.0f} s): reconstruction scene-FID / MSE / "
            f"code usage, 2,000 test scenes | {r['rfid']:.2f} / {r['mse']:.4f} / {r['usage']:.0%} | {goal} |"
        )
    for name, r in report["prior"].items():
        rows.append(
            f"| `vqgan-prior-scenes` over `{name}` ({r['steps']} steps): scene-FID of 1,000 samples / "
            f"test nats per code | {r['fid']:.2f} / {r['val_loss']:.3f} | "
            f"floor (1,000 other test scenes): {report['sample_fid_floor']:.2f} |"
        )
    return rows


register(
    "vqgan",
    "vqgan-scenes vs vqvae-scenes (same 8x8 grid and CPU budget), then a GPT prior over each (~30 min)",
    bench_vqgan,
    _vqgan_rows,
    lambda report: report["stage1"]["vqgan-scenes"]["rfid"] < report["stage1"]["vqvae-scenes"]["rfid"],
)
