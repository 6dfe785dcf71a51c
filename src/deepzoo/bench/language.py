"""Benchmarks of the Transformer family (issue #4): GPT time to quality, attention throughput."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from deepzoo.bench.classifiers import time_to_accuracy, within
from deepzoo.bench.registry import register, seconds
from deepzoo.bench.timing import matmul_peak, train_variant

GOAL_SECONDS = 30.0
"""Issue #4: the median time to 1.88 nats/char of validation loss on a 2-core CPU."""


def bench_gpt_shakespeare(quick: bool, results: Path) -> dict[str, Any]:
    """Issue #4: wall seconds to validation loss 1.88 nats/char (median of 3), and the best
    validation loss of one 5-minute run of the same recipe."""
    report = time_to_accuracy(
        "gpt-shakespeare", (1.88,), 1 if quick else 3, 20.0 if quick else 150.0, "val_loss", False
    )
    with tempfile.TemporaryDirectory() as tmp:
        result, _ = train_variant(
            "gpt-shakespeare",
            Path(tmp) / "r",
            steps=1 if quick else 9000,
            max_seconds=10.0 if quick else 300.0,
            eval_every=500,
            progress=False,
        )
    return (
        {"benchmark": "gpt-shakespeare", "goal_seconds": GOAL_SECONDS}
        | report
        | {"five_minute_run": {"steps": result.step, "best_val_loss": result.best.get("value")}}
    )


def attention_throughput(
    dtype: torch.dtype, seq: int = 256, dim: int = 256, heads: int = 4, batch: int = 8
) -> float:
    """Tokens/s of forward+backward through one pre-norm Transformer block (median of 7)."""
    from deepzoo.nn.transformer import EncoderBlock

    torch.manual_seed(0)
    block = EncoderBlock(dim, heads)
    x = torch.randn(batch, seq, dim, requires_grad=True)
    times = []
    for i in range(10):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            y = block(x)
        y.float().sum().backward()
        if i >= 3:
            times.append(time.perf_counter() - start)
    return batch * seq / statistics.median(times)


def bench_attention(quick: bool, results: Path) -> dict[str, Any]:
    """Issue #4: forward+backward throughput of an attention block (sequence 256, width 256,
    4 heads) in fp32 and bf16, and the share of the matmul peak measured in the same run."""
    from torch.utils.flop_counter import FlopCounterMode

    from deepzoo.nn.transformer import EncoderBlock

    peak = matmul_peak()
    block, x = EncoderBlock(256, 4), torch.randn(8, 256, 256, requires_grad=True)
    counter = FlopCounterMode(display=False)
    with counter:
        block(x).sum().backward()
    flops_per_token = counter.get_total_flops() / (8 * 256)
    speed = {"fp32": attention_throughput(torch.float32), "bf16": attention_throughput(torch.bfloat16)}
    return {
        "benchmark": "attention",
        "matmul_peak_gflops": peak,
        "tokens_per_s": speed,
        "gflop_per_token": flops_per_token / 1e9,
        "fraction_of_peak": {k: v * flops_per_token / 1e9 / peak[k] for k, v in speed.items()},
    }


def _gpt_rows(gpt: dict[str, Any]) -> list[str]:
    five = gpt["five_minute_run"]
    return [
        f"| `gpt-shakespeare`: time to validation loss 1.88 nats/char "
        f"({gpt['runs_reaching_1.88']}/{len(gpt['runs'])} runs reach it) "
        f"| {seconds(gpt['median_seconds_to_1.88'])} | <= {gpt['goal_seconds']:.0f} s |",
        f"| `gpt-shakespeare`: best validation loss in 5 minutes ({five['steps']} steps) "
        f"| {five['best_val_loss']:.3f} nats/char | |",
    ]


def _attention_rows(attention: dict[str, Any]) -> list[str]:
    speed, share = attention["tokens_per_s"], attention["fraction_of_peak"]
    return [
        f"| attention block fwd+bwd (seq 256, width 256, 4 heads), fp32 / bf16 | "
        f"{speed['fp32']:.0f} / {speed['bf16']:.0f} tokens/s ({share['fp32']:.1%} / "
        f"{share['bf16']:.1%} of the matmul peak) | |"
    ]


register(
    "gpt-shakespeare",
    "gpt-shakespeare: time to 1.88 nats/char, best loss of a 5-minute run",
    bench_gpt_shakespeare,
    _gpt_rows,
    lambda gpt: within(gpt["median_seconds_to_1.88"], GOAL_SECONDS),
)
register(
    "attention",
    "attention block fwd+bwd tokens/s and share of the matmul peak",
    bench_attention,
    _attention_rows,
)
