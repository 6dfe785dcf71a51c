"""Benchmarks of the autoencoder family (issue #5): VAE likelihood, CVAE label accuracy, VQ-VAE and
its prior, and the VectorQuantizer's speed against vector_quantize_pytorch."""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from deepzoo.bench.registry import register
from deepzoo.bench.timing import last_eval, median_seconds, train_variant

VAE_GOAL_NATS = 95.0
"""Issue #5: vae-mnist's test NLL (IWAE, k = 1000) after its 10-minute budget."""
CVAE_GOAL = 0.95
"""Issue #5: the share of cvae-mnist samples the classifier labels as the asked digit."""
VQ_SPEEDUP_GOAL = 3.0
"""Issue #5: VectorQuantizer fwd+bwd at least this many times faster than the peer, at every size."""


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


def bench_vae(quick: bool, results: Path) -> dict[str, Any]:
    """Issue #5: the VAE recipe trained for its 10 minutes, then the test NLL by the importance-
    weighted bound with k = 1000 over the whole (fixed-binarization) test split, in fp32."""
    from deepzoo.metrics.likelihood import iwae_nll
    from deepzoo.recipes import get_recipe, load_run

    k = 10 if quick else 1000
    with tempfile.TemporaryDirectory() as tmp:
        result, wall = train_variant("vae-mnist", Path(tmp) / "vae", quick=quick)
        run = load_run(result.run_dir)
        _, test = get_recipe("vae-mnist").data(run.config, torch.device("cpu"))
        torch.manual_seed(0)
        start = time.perf_counter()
        bound = iwae_nll(run.model.log_importance_weights, test, k, batch_size=100, chunk=100)
        eval_seconds = time.perf_counter() - start
        last = last_eval(result.run_dir)
    return {
        "steps": result.step,
        "train_seconds": last["time"],
        "wall_seconds": wall,
        "k": k,
        "test_nll_nats": bound["nll"],
        "test_neg_elbo_nats": bound["neg_elbo"],
        "iwae_seconds": eval_seconds,
        "fid": last["fid"],
        "goal_nats": VAE_GOAL_NATS,
        "reference": "86.76 nats, one stochastic layer, k=5000 (Burda et al., 2016, Table 1)",
    }


def bench_cvae(quick: bool, results: Path) -> dict[str, Any]:
    """Issue #5: share of 10,000 class-conditional CVAE samples the feature classifier labels as
    the asked digit (goal 95%), with their classifier-FID; the AE trained beside it for reference."""
    from deepzoo.recipes import load_run

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("cvae-mnist", "ae-mnist"):
            result, wall = train_variant(name, Path(tmp) / name, quick=quick)
            last = last_eval(result.run_dir)
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
    out["goal_label_accuracy"] = CVAE_GOAL
    return out


def bench_vqvae(quick: bool, results: Path) -> dict[str, Any]:
    """Issue #5: the VQ-VAE recipe (test MSE, code perplexity and usage), then its GPT prior
    (classifier-FID and label accuracy of 10,000 decoded samples)."""
    from deepzoo.recipes import get_recipe, load_run

    with tempfile.TemporaryDirectory() as tmp:
        vq, vq_wall = train_variant("vqvae-mnist", Path(tmp) / "vq", quick=quick)
        stage1 = last_eval(vq.run_dir)
        config = replace(get_recipe("vqvae-prior-mnist").default, vqvae_run=str(vq.run_dir))
        prior, prior_wall = train_variant(
            "vqvae-prior-mnist", Path(tmp) / "prior", quick=quick, config=config
        )
        stage2 = last_eval(prior.run_dir)
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


def bench_vq_speed(quick: bool, results: Path) -> dict[str, Any]:
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
        t_peer, t_ours = median_seconds(step_peer, repeats), median_seconds(step_ours, repeats)
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
        "goal_speedup": VQ_SPEEDUP_GOAL,
    }


def _vae_rows(vae: dict[str, Any]) -> list[str]:
    return [
        f"| `vae-mnist`: test NLL, IWAE k={vae['k']}, after {vae['train_seconds']:.0f} s of training "
        f"({vae['steps']} steps; -ELBO {vae['test_neg_elbo_nats']:.2f}) "
        f"| {vae['test_nll_nats']:.2f} nats "
        f"| <= {vae['goal_nats']:.0f} (paper: 86.76) |"
    ]


def _cvae_rows(cvae: dict[str, Any]) -> list[str]:
    c, a = cvae["cvae-mnist"], cvae["ae-mnist"]
    return [
        f"| `cvae-mnist`: samples labelled as the asked digit ({c['samples']} samples; classifier-FID "
        f"{c['fid']:.1f}; {c['train_seconds']:.0f} s) | {c['label_accuracy']:.2%} | >= 95% |",
        f"| `ae-mnist`: test reconstruction (nats/image) and classifier-FID of samples | "
        f"{a['recon']:.1f} / {a['fid']:.1f} | |",
    ]


def _vqvae_rows(vq: dict[str, Any]) -> list[str]:
    s, p = vq["vqvae"], vq["prior"]
    return [
        f"| `vqvae-mnist`: test MSE / code perplexity / usage of {vq['num_codes']} codes "
        f"({s['train_seconds']:.0f} s) | {s['mse']:.4f} / {s['perplexity']:.1f} / {s['usage']:.0%} | |",
        f"| `vqvae-prior-mnist`: classifier-FID / label accuracy of {p['samples']} decoded samples "
        f"| {p['fid']:.1f} / {p['label_accuracy']:.2%} | |",
    ]


def _vq_speed_rows(speed: dict[str, Any]) -> list[str]:
    return [
        f"| `VectorQuantizer` fwd+bwd, EMA + restart, (N, D, K) = ({r['n']}, {r['d']}, {r['k']}): "
        f"ours / {speed['peer']} | {r['ours_ms']:.1f} / {r['peer_ms']:.1f} ms "
        f"({r['speedup']:.1f}x; same codes {r['agreement_with_peer']:.2%}) | >= 3x |"
        for r in speed["sizes"]
    ]


register(
    "vae",
    "vae-mnist: test NLL (IWAE k=1000) after its 10-minute budget",
    bench_vae,
    _vae_rows,
    lambda vae: vae["test_nll_nats"] <= VAE_GOAL_NATS,
)
register(
    "cvae",
    "cvae-mnist label accuracy of samples; ae-mnist reconstruction and FID",
    bench_cvae,
    _cvae_rows,
    lambda cvae: cvae["cvae-mnist"]["label_accuracy"] >= CVAE_GOAL,
)
register(
    "vqvae",
    "vqvae-mnist MSE/perplexity/usage, then its GPT prior's FID and label accuracy",
    bench_vqvae,
    _vqvae_rows,
)
register(
    "vq-speed",
    "VectorQuantizer fwd+bwd vs vector_quantize_pytorch (needs [bench])",
    bench_vq_speed,
    _vq_speed_rows,
    lambda speed: all(r["speedup"] >= VQ_SPEEDUP_GOAL for r in speed["sizes"]),
)
