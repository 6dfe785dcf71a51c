"""Recipes of the GAN family on MNIST: MLP GAN, DCGAN, conditional DCGAN, self-conditioned DCGAN,
WGAN and WGAN-GP."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from deepzoo.data.tensors import TensorData
from deepzoo.metrics.fid import sample_quality
from deepzoo.models.gan import GAN, GANConfig
from deepzoo.recipes.common import SampleEval, mnist_splits, sample_grid
from deepzoo.recipes.registry import Recipe, register
from deepzoo.train.config import OptimConfig, TrainConfig

BUDGET_SECONDS = 300.0
"""The CPU budget of every GAN recipe: the same as the diffusion family's, so the benchmark
compares families at equal training time."""


@dataclass(frozen=True)
class GANRun:
    model: GANConfig = GANConfig()
    eval: SampleEval = SampleEval()
    train: TrainConfig = TrainConfig()


def _evaluate_gan(model: GAN, data: TensorData, run_dir: Path, config: GANRun) -> dict[str, float]:
    """classifier-FID of `eval.samples` samples, the entropy of their predicted-label histogram
    (log 10 = 2.30 nats when every digit is equally frequent) and, conditional: label accuracy."""
    n = config.eval.samples
    labels = torch.arange(n) % 10 if model.conditional else None
    samples = sample_grid(model, run_dir, n)
    return sample_quality(samples, data.tensors["x"].cpu(), labels)


def _fit_clusters(model: GAN, data: TensorData) -> None:
    """Self-conditioned models (`--model.clusters K`): k-means on the training images, once
    (loaded runs keep the fit saved with their weights)."""
    if model.config.clusters and not model.clusters_fitted:
        model.fit_clusters(data.tensors["x"])


def adam_gan(lr: float, betas: tuple[float, float] = (0.5, 0.999), **kw) -> TrainConfig:
    """Adam (beta1 0.5 as in DCGAN, no weight decay, constant rate), batch 64, EMA (0.99) of the
    generator only, trained until the CPU budget runs out (20,000 steps cap the run on a GPU),
    evaluated every 2,000 steps and at the end."""
    return TrainConfig(
        steps=20_000,
        batch_size=64,
        optimizer="adamw",
        lr=lr,
        betas=betas,
        weight_decay=0.0,
        schedule="constant",
        ema_decay=0.99,
        ema_of="generator",
        eval_every=2000,
        checkpoint_every=2000,
        max_seconds=BUDGET_SECONDS,
        diverge_factor=0.0,  # an adversarial loss may rise for good reasons
        optim={"g": OptimConfig(), "d": OptimConfig()},  # each player's own settings, as flags
        **kw,
    )


def _gan(name: str, summary: str, default: GANRun, metric: str, reference: str) -> Recipe:
    return register(
        Recipe(
            name=name,
            summary=summary,
            default=default,
            build=lambda c: GAN(c.model),
            data=mnist_splits,
            evaluate=_evaluate_gan,
            samples="images",
            prepare=_fit_clusters,
            metric=metric,
            reference=reference,
        )
    )


_gan(
    "gan-mnist",
    "MLP GAN (Goodfellow et al., 2014) with the non-saturating generator loss",
    GANRun(GANConfig(arch="mlp", latent=64, width=256), train=adam_gan(2e-4)),
    "fid",
    "the original GAN's MLPs; compare with dcgan-mnist at the same budget",
)
_gan(
    "dcgan-mnist",
    "DCGAN: transposed convolutions with BatchNorm in G, strided convolutions with LeakyReLU in D",
    GANRun(GANConfig(arch="dcgan", width=32, d_norm="none", r1_weight=1.0), train=adam_gan(2e-3)),
    "fid",
    "Radford et al. (2016), D without BatchNorm and with R1 (gamma 1); "
    "goal: classifier-FID <= 30 in 300 CPU seconds (flow matching: 29)",
)
_gan(
    "cgan-mnist",
    "conditional DCGAN: label embedding next to z in G, projection discriminator",
    GANRun(GANConfig(arch="dcgan", width=32, num_classes=10), train=adam_gan(2e-3)),
    "label_accuracy",
    "goal: the feature classifier labels at least 97% of the samples as the asked digit",
)
_gan(
    "scgan-mnist",
    "self-conditioned DCGAN: cgan-mnist's networks on 50 k-means clusters of the images, no labels",
    GANRun(GANConfig(arch="dcgan", width=32, clusters=50), train=adam_gan(2e-3)),
    "fid",
    "after Liu et al. (2020), with fixed clusters of the pixels instead of re-clustered D features; "
    "compare with dcgan-mnist (the same G without the cluster) at the same budget",
)
_gan(
    "wgan-mnist",
    "WGAN: critic weights clipped to [-0.01, 0.01], 5 critic steps per G step, RMSProp lr 5e-5",
    GANRun(
        GANConfig(arch="dcgan", width=32, objective="wgan", n_critic=5, clip=0.01, d_norm="batch"),
        train=replace(adam_gan(5e-5), optimizer="rmsprop", alpha=0.99),
    ),
    "fid",
    "Arjovsky et al. (2017), Algorithm 1 (without its 100 critic steps for the first 25 G steps)",
)
_gan(
    "wgan-gp-mnist",
    "WGAN-GP: gradient penalty (lambda 10) on interpolates, 5 critic steps, Adam 1e-3 (0, 0.9)",
    GANRun(
        GANConfig(arch="dcgan", width=32, objective="wgan_gp", n_critic=5, d_norm="layer"),
        train=adam_gan(1e-3, betas=(0.0, 0.9)),
    ),
    "fid",
    "Gulrajani et al. (2017), Algorithm 1 with lr 1e-3 (the paper's 1e-4 is too slow for 300 s); "
    "goal: classifier-FID <= 40 in 300 CPU seconds",
)
