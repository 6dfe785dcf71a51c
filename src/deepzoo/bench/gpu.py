"""Training speed on an accelerator (issue #10): steps/s of each recipe's training step, eager and
(on CUDA) under torch.compile, and the share of the device's bf16 matmul peak it reaches. It runs on any
device (the table says which); the goals are for one H100: edm-mnist >= 200 steps/s at batch 128 eager,
gpt-shakespeare >= 5x its steps/s on 2 CPU threads (measured in the same run)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import torch

from deepzoo.bench.classifiers import training_throughput
from deepzoo.bench.registry import register
from deepzoo.bench.timing import matmul_peak, train_flops_per_example
from deepzoo.train.distributed import pick_device

# (recipe, batch size): the diffusion U-Net at two batch sizes shows whether the host bounds the step
GPU_RECIPES = (
    ("edm-mnist", 128),
    ("edm-mnist", 512),
    ("flow-matching-mnist", 128),
    ("gpt-shakespeare", 32),
    ("cnn-mnist", 128),
    ("vqvae-mnist", 128),
)
EDM_GOAL = 200.0
"""Eager training steps/s of edm-mnist at batch 128."""
GPT_GOAL = 5.0
"""gpt-shakespeare's best steps/s over its steps/s on 2 CPU threads."""


def device_peak(device: torch.device, precision: str, size: int = 8192, repeats: int = 10) -> float:
    """Median GFLOP/s of a (size x size) matmul on `device` in `precision` (2 n^3 flops)."""
    if device.type != "cuda":
        return matmul_peak(names=(precision,))[precision]
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * size**3 / statistics.median(times) / 1e9


def flops_per_step(recipe_name: str, batch_size: int) -> float:
    """Forward + backward FLOPs of one training step at `batch_size` (FlopCounterMode on the CPU)."""
    from deepzoo.recipes import get_recipe

    recipe = get_recipe(recipe_name)
    torch.manual_seed(0)
    model = recipe.build(recipe.default)
    train, _ = recipe.data(recipe.default, torch.device("cpu"))
    return train_flops_per_example(model, train[slice(0, 8)]) * batch_size


def bench_gpu(quick: bool, results: Path) -> dict[str, Any]:
    from deepzoo.train.trainer import use_bf16

    device = pick_device("auto")
    # bf16 on CUDA; elsewhere what the trainer's auto picks (a CPU without AMX runs bf16 ~500x slower)
    precision = "bf16" if device.type == "cuda" or use_bf16("auto", device) else "fp32"
    peak = device_peak(device, precision)
    steps = 40 if quick else 400
    recipes = [("edm-mnist", 128), ("gpt-shakespeare", 32)] if quick else GPU_RECIPES
    rows = []
    for name, batch_size in recipes:
        flops = flops_per_step(name, batch_size)
        for compiled in (False, True) if device.type == "cuda" else (False,):  # CPU inductor: minutes
            start = time.perf_counter()
            try:
                per_s = training_throughput(
                    name, precision, steps, device=str(device), batch_size=batch_size, compile=compiled,
                    max_seconds=0.0,
                ) / batch_size  # fmt: skip
                error = None
            except Exception as err:  # a recipe torch.compile cannot handle is reported, not fatal
                per_s, error = None, f"{type(err).__name__}: {str(err)[:200]}"
            rows.append(
                {
                    "recipe": name, "batch_size": batch_size, "compile": compiled,
                    "steps_per_s": per_s, "images_or_sequences_per_s": per_s and per_s * batch_size,
                    "fraction_of_peak": per_s and per_s * flops / 1e9 / peak,
                    "wall_seconds": time.perf_counter() - start, "error": error,
                }
            )  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        gpt_cpu = training_throughput("gpt-shakespeare", "auto", 40 if quick else 120, device="cpu") / 32
    finally:
        torch.set_num_threads(threads)
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        "precision": precision,
        "peak_gflops": peak,
        "rows": rows,
        "gpt_cpu_2_threads_steps_per_s": gpt_cpu,
        "goals": {
            "edm-mnist steps/s at batch 128": EDM_GOAL,
            "gpt-shakespeare speed-up over 2 CPU threads": GPT_GOAL,
        },
    }


def _edm_goal_row(row: dict[str, Any]) -> bool:
    """The row EDM_GOAL judges: edm-mnist at batch 128, eager."""
    return row["recipe"] == "edm-mnist" and row["batch_size"] == 128 and not row["compile"]


def _gpu_met(result: dict[str, Any]) -> bool:
    """Both goals; a failed row (steps_per_s None) counts as 0 steps/s."""
    rows = result["rows"]
    edm = next(r for r in rows if _edm_goal_row(r))
    gpt = max(r["steps_per_s"] or 0.0 for r in rows if r["recipe"] == "gpt-shakespeare")
    cpu = result["gpt_cpu_2_threads_steps_per_s"]
    return (edm["steps_per_s"] or 0.0) >= EDM_GOAL and gpt >= GPT_GOAL * cpu


def _gpu_rows(result: dict[str, Any]) -> list[str]:
    rows = []
    for r in result["rows"]:
        mode = "torch.compile" if r["compile"] else "eager"
        head = f"{result['device']}: `{r['recipe']}` batch {r['batch_size']}, {result['precision']}, {mode}"
        if r["steps_per_s"] is None:
            rows.append(f"| {head} | failed: {r['error']} | |")
            continue
        goal = f">= {EDM_GOAL:.0f} steps/s" if _edm_goal_row(r) else ""
        rows.append(
            f"| {head}: steps/s (share of the {result['peak_gflops'] / 1e3:.1f} TFLOP/s matmul peak) "
            f"| {r['steps_per_s']:.1f} ({r['fraction_of_peak']:.2%}) | {goal} |"
        )
    rows.append(
        f"| {result['device']}: `gpt-shakespeare` steps/s on 2 CPU threads (the 5x baseline) "
        f"| {result['gpt_cpu_2_threads_steps_per_s']:.1f} | |"
    )
    return rows


register(
    "gpu",
    "steps/s and share of the bf16 peak per recipe on the accelerator (an H100)",
    bench_gpu,
    _gpu_rows,
    _gpu_met,
)
