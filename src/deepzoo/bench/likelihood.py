"""Benchmarks of the exact-likelihood family (issue #12): test bits/dim of the flows and test NLL
of the autoregressive models after their CPU budget, the speed of an affine coupling stack
against nflows, and the time per image of pixel-by-pixel sampling with and without the cache."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from deepzoo.bench.registry import register
from deepzoo.bench.timing import interleaved_speedup, train_variant

FLOWS = ("nice-mnist", "realnvp-mnist", "glow-mnist")
AUTOREGRESSIVE = ("pixelcnn-mnist", "gated-pixelcnn-mnist", "pixelrnn-mnist")
GOALS = {"flows": ("bpd", 1.5), "autoregressive": ("nll", 90.0)}
"""Issue #12: family -> (test metric, the value its best model reaches or beats)."""


def _train_family(names: tuple[str, ...], metric: str, goal: float, quick: bool) -> dict[str, Any]:
    """Each recipe trained for its budget (evaluation time not counted), then the metric on the
    whole test split."""
    from deepzoo.recipes import load_run
    from deepzoo.train.logging import read_metrics

    models = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            result, wall = train_variant(name, Path(tmp) / name, quick=quick)
            evals = [r for r in read_metrics(result.run_dir / "metrics.jsonl") if r["split"] == "eval"]
            load_run(result.run_dir)  # the run loads back
            models[name] = {
                "steps": result.step,
                "train_seconds": evals[-1]["time"],
                "wall_seconds": wall,
                metric: evals[-1][metric],
                "curve": [{"step": r["step"], "seconds": r["time"], metric: r[metric]} for r in evals],
            }
    best = min(models, key=lambda n: models[n][metric])
    return {
        "metric": metric,
        "goal": goal,
        "best": best,
        "models": models,
    }


def _best_met(family: str) -> Callable[[dict[str, Any]], bool]:
    """The verdict on a family's report: its best model at or under the family's goal."""
    metric, goal = GOALS[family]
    return lambda report: min(r[metric] for r in report["models"].values()) <= goal


def bench_flows(quick: bool, results: Path) -> dict[str, Any]:
    """nice/realnvp/glow-mnist: test bits/dim of dequantized MNIST after 10 CPU minutes each."""
    return _train_family(FLOWS, *GOALS["flows"], quick)


def bench_autoregressive(quick: bool, results: Path) -> dict[str, Any]:
    """pixelcnn/gated-pixelcnn/pixelrnn-mnist: test NLL (nats) of binarized MNIST after 10 CPU
    minutes each."""
    return _train_family(AUTOREGRESSIVE, *GOALS["autoregressive"], quick)


def _family_rows(report: dict[str, Any]) -> list[str]:
    unit = "bits/dim" if report["metric"] == "bpd" else "nats"
    rows = []
    for name, r in report["models"].items():
        goal = f"best <= {report['goal']:g}" if name == report["best"] else ""
        rows.append(
            f"| `{name}` test {unit} ({r['steps']} steps, {r['train_seconds']:.0f} s) | "
            f"{r[report['metric']]:.3f} | {goal} |"
        )
    return rows


def bench_coupling_speed(quick: bool, results: Path) -> dict[str, Any]:
    """Forward + backward of 8 affine couplings on D = 64, batch 256, against nflows'
    AffineCouplingTransform with the same conditioner MLP (D_in -> 256 -> 256 -> D_out, ReLU) and
    alternating masks, both splitting x by index; 15 interleaved rounds (3 quick) of the median of 7
    runs each; speedup = the median over rounds of nflows' time / ours."""
    from importlib.metadata import version

    from nflows.transforms import AffineCouplingTransform, CompositeTransform
    from torch import nn

    from deepzoo.nn.flows import Coupling, FlowSequence, alternating_mask

    dim, batch, depth, hidden = 64, 256, 8, 256

    class MLP(nn.Sequential):
        """D_in -> hidden -> hidden -> D_out with ReLUs; ignores the context nflows passes."""

        def __init__(self, d_in: int, d_out: int) -> None:
            super().__init__(
                nn.Linear(d_in, hidden),
                nn.ReLU(),
                nn.Linear(hidden, hidden),
                nn.ReLU(),
                nn.Linear(hidden, d_out),
            )

        def forward(self, x: torch.Tensor, context: Any = None) -> torch.Tensor:
            return super().forward(x)

    mlp = MLP

    torch.manual_seed(0)
    ours = FlowSequence(
        [Coupling(alternating_mask(dim, i % 2), mlp(dim // 2, dim), "realnvp") for i in range(depth)]
    )
    peer = CompositeTransform(
        [
            AffineCouplingTransform(alternating_mask(dim, i % 2)[0] * 2 - 1, lambda a, b: mlp(a, b))
            for i in range(depth)
        ]
    )
    x = torch.randn(batch, dim)

    def step_ours() -> None:
        z, logdet = ours(x)
        (z.square().sum() - logdet.sum()).backward()

    def step_peer() -> None:
        z, logdet = peer(x)
        (z.square().sum() - logdet.sum()).backward()

    repeats, rounds = (3, 3) if quick else (7, 15)
    t_ours, t_peer, speedup = interleaved_speedup(step_ours, step_peer, repeats, rounds)
    return {
        "dim": dim, "batch": batch, "couplings": depth, "hidden": hidden,
        "ours_ms": 1e3 * t_ours, "peer_ms": 1e3 * t_peer,
        "speedup": speedup, "rounds": rounds, "peer": f"nflows {version('nflows')}",
    }  # fmt: skip


def _coupling_rows(r: dict[str, Any]) -> list[str]:
    return [
        f"| affine coupling stack fwd+bwd (D {r['dim']}, batch {r['batch']}, {r['couplings']} couplings), "
        f"ours / {r['peer']} | {r['ours_ms']:.2f} / {r['peer_ms']:.2f} ms ({r['speedup']:.2f}x) | >= 1x |"
    ]


def bench_sampling(quick: bool, results: Path) -> dict[str, Any]:
    """Seconds per image of drawing 28x28 binary images pixel by pixel (16 at once), each
    autoregressive recipe's network (untrained: time does not depend on the weights), with and
    without the cache; the two must draw the same images from the same generator."""
    from deepzoo.models.pixelcnn import PixelCNN
    from deepzoo.recipes import get_recipe

    n = 4 if quick else 16
    rows = {}
    for name in AUTOREGRESSIVE:
        torch.manual_seed(0)
        model = PixelCNN(get_recipe(name).default.model).eval()
        timing, images = {}, {}
        for cache in (True, False):
            start = time.perf_counter()
            images[cache] = model.sample(n, generator=torch.Generator().manual_seed(0), cache=cache)
            timing[cache] = (time.perf_counter() - start) / n
        rows[name] = {
            "cached_s": timing[True], "uncached_s": timing[False], "speedup": timing[False] / timing[True],
            "same_pixels": (images[True] == images[False]).float().mean().item(),
        }  # fmt: skip
    return {"images": n, "models": rows}


def _sampling_rows(report: dict[str, Any]) -> list[str]:
    return [
        f"| `{name}` sampling, s per image (cached / uncached, {report['images']} at once) | "
        f"{r['cached_s']:.3f} / {r['uncached_s']:.3f} ({r['speedup']:.1f}x; "
        f"same pixels {r['same_pixels']:.2%}) | cache faster |"
        for name, r in report["models"].items()
    ]


register(
    "flows",
    "nice/realnvp/glow-mnist, 10 CPU minutes each: test bits/dim (~35 min)",
    bench_flows,
    _family_rows,
    _best_met("flows"),
)
register(
    "autoregressive",
    "pixelcnn/gated-pixelcnn/pixelrnn-mnist, 10 CPU minutes each: test NLL in nats (~35 min)",
    bench_autoregressive,
    _family_rows,
    _best_met("autoregressive"),
)
register(
    "coupling-speed",
    "8 affine couplings (D 64, batch 256) fwd+bwd against nflows (~1 min)",
    bench_coupling_speed,
    _coupling_rows,
    lambda r: r["speedup"] >= 1,
)
register(
    "pixel-sampling",
    "pixel-by-pixel sampling time per image, cache against no cache (~5 min)",
    bench_sampling,
    _sampling_rows,
    lambda report: all(r["speedup"] > 1 for r in report["models"].values()),
)
