"""Recipes of the diffusion family: DDPM, EDM, flow matching and rectified flow (reflow) on MNIST,
all class-conditional with the same U-Net, trained under the same budget."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from deepzoo.config import Count
from deepzoo.data.mnist import load_mnist
from deepzoo.data.tensors import TensorData
from deepzoo.diffusion.samplers import reflow_pairs
from deepzoo.metrics.fid import sample_quality
from deepzoo.models.diffusion import Diffusion, DiffusionConfig
from deepzoo.recipes.common import SampleEval, adamw_linear, mnist_splits, sample_grid
from deepzoo.recipes.registry import Recipe, register
from deepzoo.recipes.runs import load_parent
from deepzoo.train import checkpoint as ckpt
from deepzoo.train.trainer import TrainConfig, use_bf16

BUDGET_SECONDS = 300.0
"""The training budget every diffusion recipe gets on a CPU (the benchmark compares them at it)."""


def _diffusion_train(steps: int) -> TrainConfig:
    return adamw_linear(
        steps, 128, 2e-3, 100, steps, grad_clip=1.0, ema_decay=0.995, max_seconds=BUDGET_SECONDS
    )


@dataclass(frozen=True)
class DiffusionRun:
    model: DiffusionConfig = DiffusionConfig()
    eval: SampleEval = SampleEval(samples=500)
    train: TrainConfig = TrainConfig()


def _evaluate_diffusion(model: Diffusion, data: TensorData, run_dir: Path, config: Any) -> dict[str, float]:
    """classifier-FID and label accuracy of `eval.samples` samples from the default sampler, and
    the grid of the first 100 (one digit per column)."""
    n = config.eval.samples
    samples = sample_grid(model, run_dir, n)
    return sample_quality(samples, data.tensors["x"].cpu(), torch.arange(n) % 10)


def _diffusion(name: str, summary: str, model: DiffusionConfig, reference: str, steps: int = 1300) -> Recipe:
    return register(
        Recipe(
            name=name,
            summary=summary,
            default=DiffusionRun(model, train=_diffusion_train(steps)),
            build=lambda c: Diffusion(c.model),
            data=mnist_splits,
            evaluate=_evaluate_diffusion,
            samples="images",
            metric="fid",
            reference=reference,
        )
    )


_diffusion(
    "ddpm-mnist",
    "DDPM: VP linear-beta process (T = 1000), epsilon prediction, uniform-t eps MSE; DDIM sampling",
    DiffusionConfig(process="vp", parameterization="epsilon", objective="ddpm", sampler="ddim", steps=32),
    "Ho et al. (2020); sampled here with DDIM (eta 0, 32 trailing steps); see the FID-vs-NFE table",
)
_diffusion(
    "edm-mnist",
    "EDM: sigma = t, EDM preconditioning, log-normal sigma weighting; Heun sampler (18 steps, 35 NFE)",
    DiffusionConfig(process="edm", parameterization="edm", objective="edm", sampler="heun", steps=18),
    "Karras et al. (2022); see the FID-vs-NFE table",
)
_diffusion(
    "flow-matching-mnist",
    "flow matching: straight path x_t = (1 - t) x_0 + t eps, velocity prediction, uniform t; Euler",
    DiffusionConfig(process="flow", parameterization="velocity", objective="flow", sampler="euler", steps=32),
    "Lipman et al. (2023); see the FID-vs-NFE table",
)


# ------------------------------------------------------------------ reflow
@dataclass(frozen=True)
class ReflowRun:
    flow_run: str = ""
    """The trained `flow-matching-mnist` run to straighten (its weights initialize this model)."""
    pairs: Count = 10_000
    """(noise, sample) couplings drawn from it, cached in the flow run's directory."""
    teacher_sampler: str = "dpmpp_2m"
    teacher_steps: Count = 8
    model: DiffusionConfig = DiffusionConfig(
        process="flow", parameterization="velocity", objective="flow", sampler="rectified_flow_euler", steps=4
    )
    eval: SampleEval = SampleEval(samples=500)
    train: TrainConfig = TrainConfig()


def _teacher(config: ReflowRun, device: torch.device | str = "cpu"):
    return load_parent(config.flow_run, ("flow-matching-mnist", "rectified-flow-mnist"), "flow-run", device)


def _build_reflow(config: ReflowRun) -> Diffusion:
    """The student: the reflow config's sampler settings around the teacher's network and weights."""
    teacher = _teacher(config)
    model = Diffusion(replace(config.model, net=teacher.config.model.net))
    model.load_state_dict(teacher.model.state_dict())
    return model


def _reflow_splits(config: ReflowRun, device: torch.device) -> tuple[TensorData, TensorData]:
    """Training data: {"noise", "x" = (teacher sample + 1) / 2 unclamped, "y"}; evaluation: MNIST test.
    The pairs are cached as reflow-N-SAMPLER-STEPS.safetensors in the flow run."""
    from safetensors.torch import load_file, save

    run = Path(config.flow_run)
    cache = run / f"reflow-{config.pairs}-{config.teacher_sampler}-{config.teacher_steps}.safetensors"
    if cache.exists():
        tensors = load_file(cache)
    else:
        teacher = _teacher(config, device).model
        generator = torch.Generator().manual_seed(0)
        chunks = []
        bf16 = use_bf16("auto", torch.device(device))
        for start in range(0, config.pairs, 500):
            n = min(500, config.pairs - start)
            labels = torch.arange(start, start + n, device=device) % 10
            noise = torch.randn(n, 1, 28, 28, generator=generator).to(device)
            denoise = lambda x, s, y=labels: teacher._denoise(x, s, y)  # noqa: E731
            with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
                _, x0 = reflow_pairs(
                    denoise, noise, teacher.sigmas(config.teacher_steps), config.teacher_sampler
                )
            chunks.append({"noise": noise.cpu(), "x": ((x0.float() + 1) / 2).cpu(), "y": labels.cpu()})
        tensors = {key: torch.cat([c[key] for c in chunks]) for key in chunks[0]}
        ckpt.write_bytes(cache, save(tensors))
    return TensorData(tensors).to(device), load_mnist("test", device)


register(
    Recipe(
        name="rectified-flow-mnist",
        summary="reflow: retrain a flow-matching run on its own (noise, sample) pairs; few-step Euler",
        default=ReflowRun(train=_diffusion_train(1300)),
        build=_build_reflow,
        data=_reflow_splits,
        evaluate=_evaluate_diffusion,
        samples="images",
        metric="fid",
        reference="Liu et al. (2023): 2-rectified flow samples well in 1-4 Euler steps",
    )
)
