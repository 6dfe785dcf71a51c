"""Recipes of the VQGAN family on the 64x64 MNIST scenes (data/scenes.py), all at an 8x8 code grid:
`vqgan-scenes` (stage 1: VQGAN), `vqvae-scenes` (the VQ-VAE at the same grid and CPU budget, for
comparison) and `vqgan-prior-scenes` (stage 2: a GPT over the codes of either, conditioned on the
scene's digits in reading order)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deepzoo.data.scenes import NUM_CLASSES, reading_order_labels
from deepzoo.data.tensors import EVAL_BATCH, TensorData
from deepzoo.metrics.fid import scene_fid
from deepzoo.models.code_prior import CodePrior, CodePriorConfig
from deepzoo.models.gpt import GPTConfig
from deepzoo.models.vqgan import VQGAN, VQGANConfig
from deepzoo.models.vqvae import VQVAE, VQVAEConfig
from deepzoo.recipes.autoencoders import tokenizer_quality
from deepzoo.recipes.common import SampleEval, adamw_linear, mean_terms, sample_grid
from deepzoo.recipes.detection import ScenesData, scenes_splits
from deepzoo.recipes.registry import Recipe, register
from deepzoo.recipes.runs import load_parent
from deepzoo.train.config import OptimConfig, TrainConfig

BUDGET_SECONDS = 300.0
"""The CPU budget of each stage-1 recipe (VQGAN and VQ-VAE alike) and of the prior."""
SCENE_STD = 0.195
"""Pixel standard deviation of the training scenes (the VQ-VAE's reconstruction scale)."""
TOKENIZERS = ("vqgan-scenes", "vqvae-scenes")


def _budget(steps: int, batch_size: int, lr: float, warmup: int, **kw: Any) -> TrainConfig:
    """AdamW, linear warm-up and decay over `steps`, stopped by the CPU budget first on a CPU;
    evaluated and checkpointed every 500 steps and at the end."""
    config = adamw_linear(steps, batch_size, lr, warmup, 500, max_seconds=BUDGET_SECONDS, **kw)
    return replace(config, checkpoint_every=500)


# ------------------------------------------------------------------ stage 1
@dataclass(frozen=True)
class VQGANRun:
    model: VQGANConfig = VQGANConfig()
    data: ScenesData = ScenesData()
    train: TrainConfig = TrainConfig()


@dataclass(frozen=True)
class SceneVQVAERun:
    model: VQVAEConfig = VQVAEConfig()
    data: ScenesData = ScenesData()
    train: TrainConfig = TrainConfig()


def _evaluate_tokenizer(model: nn.Module, data: TensorData, run_dir: Path, config: Any) -> dict[str, float]:
    """Over all test scenes: pixel MSE, code perplexity and usage, and the reconstruction scene-FID
    ("rfid", metrics/fid.py) of the reconstructions against the originals; a grid of 64 test
    scenes above their reconstructions in run_dir/samples/reconstructions.png."""
    metrics, recons = tokenizer_quality(model, data, run_dir)
    return metrics | {"rfid": scene_fid(recons, data.tensors["x"].cpu())}


register(
    Recipe(
        name="vqgan-scenes",
        summary="VQGAN: residual conv encoder/decoder with attention at 8x8, 256 EMA codes, "
        "perceptual loss, PatchGAN hinge loss with the adaptive weight",
        default=VQGANRun(
            VQGANConfig(disc_start=400),  # 150-s trials: GAN from 400 rfid 3.70, no GAN 7.97
            train=replace(
                _budget(3000, 16, 1e-3, 100, betas=(0.5, 0.9)),
                optim={"d": OptimConfig(lr=4e-4)},
                diverge_factor=0.0,  # an adversarial term may raise the loss for good reasons
            ),
        ),
        build=lambda c: VQGAN(c.model),
        data=scenes_splits,
        evaluate=_evaluate_tokenizer,
        metric="rfid",
        reference="Esser et al. (2021); goal: lower reconstruction scene-FID than vqvae-scenes at "
        "the same 8x8 grid and CPU budget",
    )
)
register(
    Recipe(
        name="vqvae-scenes",
        summary="VQ-VAE (three stride-2 convs, residual stack, MSE) at the same 8x8 grid of 256 EMA codes",
        default=SceneVQVAERun(
            VQVAEConfig(image_size=64, downsamples=3, num_codes=256, code_dim=32, data_std=SCENE_STD),
            train=_budget(20_000, 32, 2e-3, 100),
        ),
        build=lambda c: VQVAE(c.model),
        data=scenes_splits,
        evaluate=_evaluate_tokenizer,
        metric="rfid",
        reference="van den Oord et al. (2017): the baseline of vqgan-scenes (same data, grid, budget)",
    )
)


# ------------------------------------------------------------------ stage 2
@dataclass(frozen=True)
class ScenePriorRun:
    tokenizer_run: str = ""
    """The `vqgan-scenes` or `vqvae-scenes` run whose (frozen) model tokenizes the scenes; required."""
    model: CodePriorConfig = CodePriorConfig(
        GPTConfig(vocab_size=0, block_size=0, layers=4, heads=4, dim=128, positions="learned"),
        num_classes=NUM_CLASSES + 1,
        condition_length=5,
        condition_bank=1000,
    )
    """Conditioned on the scene's digits left to right, padded with the class 10 ("no digit");
    condition_length is the scenes' max_digits."""
    data: ScenesData = ScenesData()
    eval: SampleEval = SampleEval()
    train: TrainConfig = TrainConfig()


def _tokenizer(config: ScenePriorRun, device: torch.device | str = "cpu"):
    return load_parent(config.tokenizer_run, TOKENIZERS, "tokenizer-run", device)


def _build_scene_prior(config: ScenePriorRun) -> CodePrior:
    if config.model.condition_length != config.data.scene.max_digits:
        raise ValueError(
            f"model.condition_length {config.model.condition_length} must equal the scenes' "
            f"max_digits {config.data.scene.max_digits}"
        )
    return CodePrior(config.model, copy.deepcopy(_tokenizer(config).model).cpu())


def _scene_codes(config: ScenePriorRun, device: torch.device) -> tuple[TensorData, TensorData]:
    """Train and test scenes as "codes" (N, 8, 8) of the frozen tokenizer, "y" (N, max_digits)
    their digits in reading order, and "x" the test images (for the FID reference)."""
    tokenizer = _tokenizer(config, device).model
    train, test = scenes_splits(config, device)
    splits = []
    for data in (train, test):
        codes = torch.cat([tokenizer.encode(b["x"]) for b in data.batches(EVAL_BATCH)])
        splits.append({"codes": codes, "y": reading_order_labels(data.tensors)})
    return TensorData(splits[0]), TensorData(splits[1] | {"x": test.tensors["x"]})


def _remember(model: CodePrior, train: TensorData) -> None:
    model.remember_conditions(train.tensors["y"])


def _evaluate_scene_prior(
    model: CodePrior, data: TensorData, run_dir: Path, config: ScenePriorRun
) -> dict[str, float]:
    """Test cross-entropy in nats per code; scene-FID of `eval.samples` decoded samples (drawn
    under the remembered training conditions) against the test scenes."""
    metrics = {"val_loss": mean_terms(model, data)["loss"]}
    samples = sample_grid(model, run_dir, config.eval.samples)
    return metrics | {"fid": scene_fid(samples, data.tensors["x"].cpu())}


register(
    Recipe(
        name="vqgan-prior-scenes",
        summary="GPT over the 8x8 codes of a vqgan-scenes or vqvae-scenes run (--tokenizer-run), "
        "conditioned on the scene's digits left to right",
        default=ScenePriorRun(train=_budget(3000, 64, 1e-3, 100, keep_best="val_loss:min")),
        build=_build_scene_prior,
        data=_scene_codes,
        prepare=_remember,
        evaluate=_evaluate_scene_prior,
        samples="images",
        metric="fid",
        reference="stage 2 of Esser et al. (2021): scene-FID of decoded samples against the test scenes",
    )
)
