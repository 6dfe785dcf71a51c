"""Benchmarks of the contrastive family (issue #13): the speed of the CLIP loss against
open_clip's ClipLoss (a benchmark-only peer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from deepzoo.bench.registry import register
from deepzoo.bench.timing import interleaved_speedup


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
        "speedup": speedup, "peer": f"open_clip {version('open_clip_torch')}", "met": speedup >= 1,
    }  # fmt: skip


def _clip_loss_rows(r: dict[str, Any]) -> list[str]:
    return [
        f"| CLIP loss fwd+bwd (B {r['batch']}, d {r['dim']}), ours / {r['peer']} "
        f"| {r['ours_ms']:.2f} / {r['peer_ms']:.2f} ms ({r['speedup']:.2f}x) | >= 1x |"
    ]


register(
    "clip-loss-speed",
    "CLIP loss fwd+bwd (B 1024, d 512) against open_clip's ClipLoss (needs [bench]; ~1 min)",
    bench_clip_loss_speed,
    _clip_loss_rows,
)
