"""Benchmarks of the generative families (issue #5 autoencoders, issue #6 diffusion); registered
into deepzoo.bench's BENCHMARKS and table."""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from deepzoo.train.logging import read_metrics


def _last_eval(run_dir: Path) -> dict[str, float]:
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if r["split"] == "eval"][-1]


def _train(name: str, run_dir: Path, quick: bool, **overrides: Any):
    from deepzoo.recipes import get_recipe, train_recipe

    config = get_recipe(name).default
    if quick:
        overrides = {"steps": 50, "eval_every": 50, "checkpoint_every": 50} | overrides
    if overrides:
        config = replace(config, train=replace(config.train, **overrides))
    start = time.perf_counter()
    result = train_recipe(name, config, run_dir)
    return result, time.perf_counter() - start


def _conditional_quality(model: torch.nn.Module, per_class: int) -> dict[str, float]:
    """classifier-FID (against the MNIST test split) and label accuracy of 10 * per_class samples."""
    from deepzoo.data.mnist import load_mnist
    from deepzoo.metrics.fid import sample_quality

    n = 10 * per_class
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        samples = torch.cat([model.sample(500, generator=generator).cpu() for _ in range(0, n, 500)])
    labels = torch.arange(len(samples)) % 10
    return sample_quality(samples, load_mnist("test").tensors["x"], labels) | {"samples": len(samples)}


def bench_vae(quick: bool = False) -> dict[str, Any]:
    """Issue #5: the VAE recipe trained for its 10 minutes, then the test NLL by the importance-
    weighted bound with k = 1000 over the whole (fixed-binarization) test split, in fp32."""
    from deepzoo.metrics.likelihood import iwae_nll
    from deepzoo.recipes import get_recipe, load_run

    k = 10 if quick else 1000
    with tempfile.TemporaryDirectory() as tmp:
        result, wall = _train("vae-mnist", Path(tmp) / "vae", quick)
        run = load_run(result.run_dir)
        _, test = get_recipe("vae-mnist").data(run.config, torch.device("cpu"))
        torch.manual_seed(0)
        start = time.perf_counter()
        bound = iwae_nll(run.model.log_importance_weights, test, k, batch_size=100, chunk=100)
        eval_seconds = time.perf_counter() - start
        last = _last_eval(result.run_dir)
    return {
        "steps": result.step,
        "train_seconds": last["time"],
        "wall_seconds": wall,
        "k": k,
        "test_nll_nats": bound["nll"],
        "test_neg_elbo_nats": bound["neg_elbo"],
        "iwae_seconds": eval_seconds,
        "fid": last["fid"],
        "goal_nats": 95.0,
        "met": bound["nll"] <= 95.0,
        "reference": "86.76 nats, one stochastic layer, k=5000 (Burda et al., 2016, Table 1)",
    }


def bench_cvae(quick: bool = False) -> dict[str, Any]:
    """Issue #5: share of 10,000 class-conditional CVAE samples the feature classifier labels as
    the asked digit (goal 95%), with their classifier-FID; the AE trained beside it for reference."""
    from deepzoo.recipes import load_run

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("cvae-mnist", "ae-mnist"):
            result, wall = _train(name, Path(tmp) / name, quick)
            last = _last_eval(result.run_dir)
            row = {
                "steps": result.step,
                "train_seconds": last["time"],
                "wall_seconds": wall,
                "recon": last["recon"],
            }
            if name == "cvae-mnist":
                row |= _conditional_quality(load_run(result.run_dir).model, 100 if quick else 1000)
            else:
                row["fid"] = last["fid"]
            out[name] = row
    out["goal_label_accuracy"] = 0.95
    out["met"] = out["cvae-mnist"]["label_accuracy"] >= 0.95
    return out


def bench_vqvae(quick: bool = False) -> dict[str, Any]:
    """Issue #5: the VQ-VAE recipe (test MSE, code perplexity and usage), then its GPT prior
    (classifier-FID and label accuracy of 10,000 decoded samples)."""
    from deepzoo.recipes import get_recipe, load_run, train_recipe

    with tempfile.TemporaryDirectory() as tmp:
        vq, vq_wall = _train("vqvae-mnist", Path(tmp) / "vq", quick)
        stage1 = _last_eval(vq.run_dir)
        default = get_recipe("vqvae-prior-mnist").default
        config = replace(default, vqvae_run=str(vq.run_dir))
        if quick:
            config = replace(
                config, train=replace(config.train, steps=50, eval_every=50, checkpoint_every=50)
            )
        start = time.perf_counter()
        prior = train_recipe("vqvae-prior-mnist", config, Path(tmp) / "prior")
        prior_wall = time.perf_counter() - start
        stage2 = _last_eval(prior.run_dir)
        quality = _conditional_quality(load_run(prior.run_dir).model, 100 if quick else 1000)
    return {
        "vqvae": {k: stage1[k] for k in ("mse", "perplexity", "usage")}
        | {"steps": vq.step, "train_seconds": stage1["time"], "wall_seconds": vq_wall},
        "num_codes": get_recipe("vqvae-mnist").default.model.num_codes,
        "prior": {
            "val_loss_nats_per_code": stage2["val_loss"],
            "steps": prior.step,
            "wall_seconds": prior_wall,
        }
        | quality,
    }


def _time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_vq_speed(quick: bool = False) -> dict[str, Any]:
    """Issue #5: forward + backward of deepzoo's VectorQuantizer against vector_quantize_pytorch's
    VectorQuantize, same settings (EMA decay 0.99, commitment 0.25, dead-code threshold 1), same
    codebook (N(0, 1)), in the same run; median of 7. Assignments are compared with each other and
    with a float64 brute-force argmin."""
    from vector_quantize_pytorch import VectorQuantize

    from deepzoo.nn.quantize import VectorQuantizer

    sizes = [(2048, 64, 512), (16384, 64, 1024), (8192, 256, 8192)]
    rows = []
    for n, d, k in sizes[:1] if quick else sizes:
        torch.manual_seed(0)
        peer = VectorQuantize(
            dim=d, codebook_size=k, decay=0.99, commitment_weight=0.25, threshold_ema_dead_code=1
        )
        ours = VectorQuantizer(k, d, beta=0.25, ema=True, decay=0.99, dead_threshold=1.0)
        codebook = torch.randn(k, d)
        with torch.no_grad():
            peer._codebook.embed.copy_(codebook[None])
            peer._codebook.embed_avg.copy_(codebook[None])
        ours.codebook.copy_(codebook)
        ours.code_sum.copy_(codebook)
        x = torch.randn(n // 16, 16, d, requires_grad=True)
        brute = torch.cdist(x.detach().reshape(-1, d).double(), codebook.double()).argmin(1)
        with torch.no_grad():
            peer_codes = peer.eval()(x)[1].flatten()
            our_codes = ours.eval()(x).codes.flatten()
        peer.train(), ours.train()

        def step_peer(peer=peer, x=x):
            quantized, _, commit = peer(x)
            (quantized.sum() + commit.sum()).backward()

        def step_ours(ours=ours, x=x):
            out = ours(x)
            (out.z_q.sum() + out.loss).backward()

        repeats = 3 if quick else 7
        t_peer, t_ours = _time(step_peer, repeats), _time(step_ours, repeats)
        rows.append(
            {
                "n": n, "d": d, "k": k,
                "ours_ms": 1e3 * t_ours, "peer_ms": 1e3 * t_peer, "speedup": t_peer / t_ours,
                "agreement_with_peer": (peer_codes == our_codes).float().mean().item(),
                "ours_equal_brute_force": (our_codes == brute).float().mean().item(),
                "peer_equal_brute_force": (peer_codes == brute).float().mean().item(),
            }
        )  # fmt: skip
    from importlib.metadata import version

    return {
        "sizes": rows,
        "peer": f"vector_quantize_pytorch {version('vector-quantize-pytorch')}",
        "goal_speedup": 3.0,
        "met": all(r["speedup"] >= 3.0 for r in rows),
    }


# ------------------------------------------------------------------ table rows
def table_rows(results: dict[str, dict[str, Any]]) -> list[str]:
    rows = []
    vae = results.get("vae")
    if vae:
        rows.append(
            f"| `vae-mnist`: test NLL, IWAE k={vae['k']}, after {vae['train_seconds']:.0f} s of training "
            f"({vae['steps']} steps; -ELBO {vae['test_neg_elbo_nats']:.2f}) "
            f"| {vae['test_nll_nats']:.2f} nats "
            f"| <= {vae['goal_nats']:.0f} (paper: 86.76) |"
        )
    cvae = results.get("cvae")
    if cvae:
        c = cvae["cvae-mnist"]
        rows.append(
            f"| `cvae-mnist`: samples labelled as the asked digit ({c['samples']} samples; classifier-FID "
            f"{c['fid']:.1f}; {c['train_seconds']:.0f} s) | {c['label_accuracy']:.2%} | >= 95% |"
        )
        a = cvae["ae-mnist"]
        rows.append(
            f"| `ae-mnist`: test reconstruction (nats/image) and classifier-FID of samples | "
            f"{a['recon']:.1f} / {a['fid']:.1f} | |"
        )
    vq = results.get("vqvae")
    if vq:
        s, p = vq["vqvae"], vq["prior"]
        rows.append(
            f"| `vqvae-mnist`: test MSE / code perplexity / usage of {vq['num_codes']} codes "
            f"({s['train_seconds']:.0f} s) | {s['mse']:.4f} / {s['perplexity']:.1f} / {s['usage']:.0%} | |"
        )
        rows.append(
            f"| `vqvae-prior-mnist`: classifier-FID / label accuracy of {p['samples']} decoded samples "
            f"| {p['fid']:.1f} / {p['label_accuracy']:.2%} | |"
        )
    speed = results.get("vq-speed")
    if speed:
        for r in speed["sizes"]:
            rows.append(
                f"| `VectorQuantizer` fwd+bwd, EMA + restart, (N, D, K) = ({r['n']}, {r['d']}, {r['k']}): "
                f"ours / {speed['peer']} | {r['ours_ms']:.1f} / {r['peer_ms']:.1f} ms "
                f"({r['speedup']:.1f}x; same codes {r['agreement_with_peer']:.2%}) | >= 3x |"
            )
    return rows + _diffusion_rows(results)


BENCHMARKS = {"vae": bench_vae, "cvae": bench_cvae, "vqvae": bench_vqvae, "vq-speed": bench_vq_speed}


# ------------------------------------------------------------------ issue #6: diffusion
SAMPLER_SETS = {
    "ddpm-mnist": ("ddpm", "ddim", "dpmpp_2m"),
    "edm-mnist": ("euler", "heun", "dpmpp_2m"),
    "flow-matching-mnist": ("euler", "heun", "dpmpp_2m"),
    "rectified-flow-mnist": ("rectified_flow_euler", "heun"),
}
NFES = (4, 8, 16, 32, 64)


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


def bench_diffusion(quick: bool = False) -> dict[str, Any]:
    """Issue #6: the four recipes trained under the same CPU budget (reflow: on 10,000 pairs of the
    flow-matching run), then classifier-FID and label accuracy against NFE for each sampler."""
    from deepzoo.recipes import get_recipe, load_run, train_recipe
    from deepzoo.recipes.diffusion import BUDGET_SECONDS
    from deepzoo.viz import plot_lines

    per_class = 5 if quick else 50
    nfes = (4, 8) if quick else NFES
    models: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for name in ("ddpm-mnist", "edm-mnist", "flow-matching-mnist"):
            result, wall = _train(name, Path(tmp) / name, quick)
            runs[name] = result.run_dir
            models[name] = {"steps": result.step, "train_seconds": _last_eval(result.run_dir)["time"]}
        default = get_recipe("rectified-flow-mnist").default
        config = replace(default, flow_run=str(runs["flow-matching-mnist"]))
        if quick:
            config = replace(config, pairs=100, train=replace(config.train, steps=50, eval_every=50))
        start = time.perf_counter()
        recipe = get_recipe("rectified-flow-mnist")
        recipe.data(config, torch.device("cpu"))  # the pairs, timed apart from training
        pairs_seconds = time.perf_counter() - start
        result = train_recipe("rectified-flow-mnist", config, Path(tmp) / "reflow")
        runs["rectified-flow-mnist"] = result.run_dir
        models["rectified-flow-mnist"] = {
            "steps": result.step, "train_seconds": _last_eval(result.run_dir)["time"],
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
    plot_lines(panels, Path("benchmarks/results/diffusion_fid_vs_nfe.png"), "network evaluations", log_x=True)
    return {"budget_seconds": BUDGET_SECONDS, "samples_per_cell": 10 * per_class, "models": models}


def bench_sampler_overhead(quick: bool = False) -> dict[str, Any]:
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
        t_ours = _time(ours[name], repeats) / steps
        t_peer = _time(peers[name], repeats) / steps
        rows.append(
            {"sampler": name, "ours_us": 1e6 * t_ours, "peer_us": 1e6 * t_peer, "ratio": t_peer / t_ours}
        )
    return {
        "steps": steps,
        "rows": rows,
        "peer": f"diffusers {version('diffusers')}",
        "goal_ratio": 2.0,
        # the flow-state form is shown for comparison; a flow samples with `euler` (the same steps)
        "met": all(r["ratio"] >= 2.0 for r in rows if "flow-state" not in r["sampler"]),
    }


def _diffusion_rows(results: dict[str, dict[str, Any]]) -> list[str]:
    rows = []
    diffusion = results.get("diffusion")
    if diffusion:
        for name, report in diffusion["models"].items():
            for sampler, cells in report["sweep"].items():
                values = ", ".join(f"{c['nfe']}: {c['fid']:.0f} / {c['label_accuracy']:.0%}" for c in cells)
                head = f"`{name}` ({report['steps']} steps, {report['train_seconds']:.0f} s), {sampler}"
                rows.append(f"| {head}; NFE: classifier-FID / label accuracy | {values} | |")
    overhead = results.get("sampler-overhead")
    if overhead:
        for r in overhead["rows"]:
            rows.append(
                f"| sampler overhead per step, {r['sampler']}: ours / {overhead['peer']} | "
                f"{r['ours_us']:.0f} / {r['peer_us']:.0f} us ({r['ratio']:.1f}x less) | >= 2x |"
            )
    return rows


BENCHMARKS |= {"diffusion": bench_diffusion, "sampler-overhead": bench_sampler_overhead}
