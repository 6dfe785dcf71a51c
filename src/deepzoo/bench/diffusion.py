"""Benchmarks of the diffusion family (issue #6): FID against network evaluations for each recipe
and sampler under one CPU budget, and the samplers' per-step overhead against diffusers."""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from deepzoo.bench.registry import register
from deepzoo.bench.timing import last_eval, median_seconds, train_variant

# ------------------------------------------------------------------ issue #6: diffusion
SAMPLER_SETS = {
    "ddpm-mnist": ("ddpm", "ddim", "dpmpp_2m"),
    "edm-mnist": ("euler", "heun", "dpmpp_2m"),
    "flow-matching-mnist": ("euler", "heun", "dpmpp_2m"),
    "rectified-flow-mnist": ("rectified_flow_euler", "heun"),
}
NFES = (4, 8, 16, 32, 64)
OVERHEAD_GOAL = 2.0
"""Issue #6: a sampler's overhead per step at most half its diffusers peer's."""


def _nfe_sweep(
    model: torch.nn.Module, samplers: tuple[str, ...], per_class: int, nfes=NFES
) -> dict[str, list]:
    """For each sampler and network-evaluation budget: classifier-FID and label accuracy of
    10 * per_class class-conditional samples (heun takes ceil((nfe + 1) / 2) steps: 2 steps - 1 NFE)."""
    from deepzoo.data.mnist import load_mnist
    from deepzoo.diffusion.samplers import nfe as count_nfe
    from deepzoo.metrics.fid import sample_quality
    from deepzoo.train.trainer import use_bf16

    reference = load_mnist("test").tensors["x"]
    n = 10 * per_class
    bf16 = use_bf16("auto", torch.device("cpu"))
    out: dict[str, list] = {}
    for sampler in samplers:
        rows = []
        for budget in nfes:
            steps = (budget + 1) // 2 if sampler == "heun" else budget
            generator = torch.Generator().manual_seed(0)
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                samples = torch.cat(
                    [model.sample(min(500, n - i), generator=generator, sampler=sampler, steps=steps)
                     for i in range(0, n, 500)]
                )  # fmt: skip
            seconds = time.perf_counter() - start
            quality = sample_quality(samples.float(), reference, torch.arange(n) % 10)
            rows.append({"nfe": count_nfe(sampler, steps), "seconds": seconds} | quality)
        out[sampler] = rows
    return out


def bench_diffusion(quick: bool, results: Path) -> dict[str, Any]:
    """Issue #6: the four recipes trained under the same CPU budget (reflow: on 10,000 pairs of the
    flow-matching run), then classifier-FID and label accuracy against NFE for each sampler."""
    from deepzoo.recipes import get_recipe, load_run
    from deepzoo.recipes.diffusion import BUDGET_SECONDS
    from deepzoo.viz import plot_lines

    per_class = 5 if quick else 50
    nfes = (4, 8) if quick else NFES
    models: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for name in ("ddpm-mnist", "edm-mnist", "flow-matching-mnist"):
            result, wall = train_variant(name, Path(tmp) / name, quick=quick)
            runs[name] = result.run_dir
            models[name] = {"steps": result.step, "train_seconds": last_eval(result.run_dir)["time"]}
        recipe = get_recipe("rectified-flow-mnist")
        config = replace(recipe.default, flow_run=str(runs["flow-matching-mnist"]))
        if quick:
            config = replace(config, pairs=100)
        start = time.perf_counter()
        recipe.data(config, torch.device("cpu"))  # the pairs, timed apart from training
        pairs_seconds = time.perf_counter() - start
        result, _ = train_variant("rectified-flow-mnist", Path(tmp) / "reflow", quick=quick, config=config)
        runs["rectified-flow-mnist"] = result.run_dir
        models["rectified-flow-mnist"] = {
            "steps": result.step, "train_seconds": last_eval(result.run_dir)["time"],
            "pairs": config.pairs, "pairs_seconds": pairs_seconds,
            "teacher": f"{config.teacher_sampler}, {config.teacher_steps} steps",
        }  # fmt: skip
        for name, run_dir in runs.items():
            model = load_run(run_dir).model
            models[name]["sweep"] = _nfe_sweep(model, SAMPLER_SETS[name], per_class, nfes)
    panels = {"classifier-FID": {}, "label accuracy": {}}
    for name, report in models.items():
        for sampler, rows in report["sweep"].items():
            label = f"{name.removesuffix('-mnist')} / {sampler}"
            panels["classifier-FID"][label] = ([r["nfe"] for r in rows], [r["fid"] for r in rows])
            panels["label accuracy"][label] = ([r["nfe"] for r in rows], [r["label_accuracy"] for r in rows])
    plot_lines(panels, results / "diffusion_fid_vs_nfe.png", "network evaluations", log_x=True)
    return {"budget_seconds": BUDGET_SECONDS, "samples_per_cell": 10 * per_class, "models": models}


def bench_sampler_overhead(quick: bool, results: Path) -> dict[str, Any]:
    """Issue #6: seconds per sampling step with a trivial denoiser (D = 0.9 x on one 1x28x28
    image), deepzoo's samplers against diffusers' schedulers driven by the usual loop
    (set_timesteps, then step() per timestep), in the same run; median of 5 loops of 200 steps.
    A rectified flow samples with `euler` on the flow grid (x_hat state); `rectified_flow_euler`
    is the same step on the flow state x_t, one rescaling more per step."""
    from importlib.metadata import version

    from diffusers import (
        DDIMScheduler,
        DDPMScheduler,
        EulerDiscreteScheduler,
        FlowMatchEulerDiscreteScheduler,
    )

    from deepzoo.diffusion.samplers import SAMPLERS
    from deepzoo.diffusion.schedules import VPSchedule, flow_sigmas, karras_sigmas

    steps, repeats = (50, 3) if quick else (200, 5)
    x = torch.randn(1, 1, 28, 28)
    denoise = lambda x, sigma: 0.9 * x  # noqa: E731
    vp = VPSchedule()
    ours = {
        "ddpm": lambda: SAMPLERS["ddpm"](denoise, x, vp.sampling_sigmas(steps, "trailing")),
        "ddim": lambda: SAMPLERS["ddim"](denoise, x, vp.sampling_sigmas(steps, "trailing")),
        "euler": lambda: SAMPLERS["euler"](denoise, x, karras_sigmas(steps)),
        "flow euler": lambda: SAMPLERS["euler"](denoise, x, flow_sigmas(steps, t_max=0.999)),
        "flow euler (flow-state form)": lambda: SAMPLERS["rectified_flow_euler"](
            denoise, x, flow_sigmas(steps, t_max=0.999)
        ),
    }

    def loop(scheduler, model_input_scaling: bool = False):
        def run():
            scheduler.set_timesteps(steps)
            sample = x * getattr(scheduler, "init_noise_sigma", 1.0)
            for t in scheduler.timesteps:
                model_in = scheduler.scale_model_input(sample, t) if model_input_scaling else sample
                sample = scheduler.step(0.9 * model_in, t, sample).prev_sample
            return sample

        return run

    peers = {
        "ddpm": loop(DDPMScheduler(timestep_spacing="trailing")),
        "ddim": loop(DDIMScheduler(timestep_spacing="trailing")),
        "euler": loop(EulerDiscreteScheduler(use_karras_sigmas=True), model_input_scaling=True),
        "flow euler": loop(FlowMatchEulerDiscreteScheduler()),
        "flow euler (flow-state form)": loop(FlowMatchEulerDiscreteScheduler()),
    }
    rows = []
    for name in ours:
        t_ours = median_seconds(ours[name], repeats) / steps
        t_peer = median_seconds(peers[name], repeats) / steps
        rows.append(
            {"sampler": name, "ours_us": 1e6 * t_ours, "peer_us": 1e6 * t_peer, "ratio": t_peer / t_ours}
        )
    return {
        "steps": steps,
        "rows": rows,
        "peer": f"diffusers {version('diffusers')}",
        "goal_ratio": OVERHEAD_GOAL,
    }


def _overhead_met(overhead: dict[str, Any]) -> bool:
    """Every sampler at least OVERHEAD_GOAL times less overhead than its peer; the flow-state form
    is shown for comparison only (a flow samples with `euler`, the same steps)."""
    return all(r["ratio"] >= OVERHEAD_GOAL for r in overhead["rows"] if "flow-state" not in r["sampler"])


def _diffusion_rows(diffusion: dict[str, Any]) -> list[str]:
    rows = []
    for name, report in diffusion["models"].items():
        for sampler, cells in report["sweep"].items():
            values = ", ".join(f"{c['nfe']}: {c['fid']:.0f} / {c['label_accuracy']:.0%}" for c in cells)
            head = f"`{name}` ({report['steps']} steps, {report['train_seconds']:.0f} s), {sampler}"
            rows.append(f"| {head}; NFE: classifier-FID / label accuracy | {values} | |")
    return rows


def _overhead_rows(overhead: dict[str, Any]) -> list[str]:
    return [
        f"| sampler overhead per step, {r['sampler']}: ours / {overhead['peer']} | "
        f"{r['ours_us']:.0f} / {r['peer_us']:.0f} us ({r['ratio']:.1f}x less) | >= 2x |"
        for r in overhead["rows"]
    ]


register(
    "diffusion",
    "ddpm/edm/flow-matching/rectified-flow under one CPU budget: FID vs NFE per sampler (~40 min)",
    bench_diffusion,
    _diffusion_rows,
)
register(
    "sampler-overhead",
    "per-step sampler overhead vs diffusers schedulers (needs [bench])",
    bench_sampler_overhead,
    _overhead_rows,
    _overhead_met,
)
