"""Recipes of the autoencoder family: AE, VAE, CVAE, VQ-VAE and the VQ-VAE's GPT prior."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deepzoo.data.mnist import load_mnist
from deepzoo.data.tensors import EVAL_BATCH, TensorData
from deepzoo.metrics.fid import sample_quality
from deepzoo.metrics.likelihood import iwae_nll
from deepzoo.models.autoencoder import Autoencoder, AutoencoderConfig
from deepzoo.models.code_prior import CodePrior, CodePriorConfig
from deepzoo.models.vqvae import VQVAE, VQVAEConfig
from deepzoo.nn.quantize import perplexity
from deepzoo.recipes.common import (
    SampleEval,
    adamw_linear,
    binarized_mnist_splits,
    mean_terms,
    mnist_splits,
    sample_grid,
)
from deepzoo.recipes.registry import Recipe, register
from deepzoo.recipes.runs import load_parent
from deepzoo.train.trainer import TrainConfig
from deepzoo.viz import save_image_grid


def _reconstruction_grid(x: torch.Tensor, recon: torch.Tensor, run_dir: Path) -> None:
    """Originals (odd rows) above their reconstructions (even rows): up to 4 rows of 16 (a
    single row of all of them when fewer than 16)."""
    width = min(16, len(x))
    n = min(64, len(x)) // width * width
    pairs = torch.stack([x[:n].cpu(), recon[:n].float().cpu()]).unflatten(1, (n // width, width))
    save_image_grid(
        pairs.transpose(0, 1).flatten(0, 2), run_dir / "samples" / "reconstructions.png", nrow=width
    )


# ------------------------------------------------------------------ AE, VAE, CVAE
@dataclass(frozen=True)
class AutoencoderRun:
    model: AutoencoderConfig = AutoencoderConfig()
    eval: SampleEval = SampleEval()
    binarize: bool = True
    """Bernoulli models: train on dynamically binarized images, test on one fixed binarization."""
    train: TrainConfig = TrainConfig()


def _autoencoder_splits(config: AutoencoderRun, device: torch.device) -> tuple[TensorData, TensorData]:
    if config.model.likelihood == "bernoulli" and config.binarize:
        return binarized_mnist_splits(config, device)
    return mnist_splits(config, device)


def _evaluate_autoencoder(
    model: Autoencoder, data: TensorData, run_dir: Path, config: AutoencoderRun
) -> dict[str, float]:
    """Test loss terms (nats per image), the IWAE bound, classifier-FID of samples (and the feature
    classifier's accuracy on them for the CVAE); reconstruction and sample grids."""
    metrics = mean_terms(model, data)
    x, y = data.tensors["x"], data.tensors["y"]
    _reconstruction_grid(x, model.reconstruct(x[:64], y[:64] if model.conditional else None), run_dir)
    if config.model.kind != "ae":
        with torch.autocast(x.device.type, enabled=False):  # likelihoods in fp32
            subset = TensorData(data[slice(0, config.eval.iwae_examples)])
            bound = iwae_nll(
                model.log_importance_weights, subset, config.eval.iwae_k, conditional=model.conditional
            )
        metrics[f"nll_iwae{config.eval.iwae_k}"] = bound["nll"]
    n = config.eval.samples
    labels = torch.arange(n) % 10 if model.conditional else None
    samples = sample_grid(model, run_dir, n)
    return metrics | sample_quality(samples, load_mnist("test").tensors["x"], labels)


def _autoencoder(name: str, summary: str, default: AutoencoderRun, metric: str, reference: str) -> Recipe:
    return register(
        Recipe(
            name=name,
            summary=summary,
            default=default,
            build=lambda c: Autoencoder(c.model),
            data=_autoencoder_splits,
            evaluate=_evaluate_autoencoder,
            samples="images",
            metric=metric,
            reference=reference,
        )
    )


_autoencoder(
    "ae-mnist",
    "convolutional autoencoder (16-d code, BCE on grey levels); samples from a Gaussian fitted to the codes",
    AutoencoderRun(
        AutoencoderConfig(kind="ae", arch="conv", latent=16, hidden=64),
        binarize=False,
        train=adamw_linear(3000, 128, 2e-3, 100, 1000),
    ),
    "recon (nats/image)",
    "a deterministic code has no likelihood; see recon and the FID of its samples",
)
_autoencoder(
    "vae-mnist",
    "VAE (MLP 784-512-512-32, Bernoulli decoder) on dynamically binarized MNIST, IWAE test NLL",
    AutoencoderRun(
        AutoencoderConfig(kind="vae", arch="mlp", latent=32, hidden=512),
        train=adamw_linear(70_000, 128, 1e-3, 500, 14_000, max_seconds=600.0),
    ),
    "nll_iwae100 (nats)",
    "one-stochastic-layer VAE: 86.76 nats (IWAE k=5000, Burda et al., 2016); goal here 95 in 10 minutes",
)
_autoencoder(
    "cvae-mnist",
    "conditional VAE (label one-hot into encoder and decoder), class-conditional samples",
    AutoencoderRun(
        AutoencoderConfig(kind="cvae", arch="mlp", latent=4, hidden=512),
        train=adamw_linear(6000, 128, 1e-3, 200, 2000),
    ),
    "label_accuracy",
    "goal: the feature classifier labels at least 95% of the samples as the asked digit",
)


# ------------------------------------------------------------------ VQ-VAE and its prior
@dataclass(frozen=True)
class VQVAERun:
    model: VQVAEConfig = VQVAEConfig()
    train: TrainConfig = TrainConfig()


def tokenizer_quality(
    model: nn.Module, data: TensorData, run_dir: Path
) -> tuple[dict[str, float], torch.Tensor]:
    """A tokenizer's (VQ-VAE, VQGAN) test pixel MSE and the perplexity and usage of its codes
    over all of `data`, with the reconstructions (N, C, H, W) on the CPU; the first 64 originals
    above their reconstructions go to run_dir/samples/reconstructions.png."""
    squared, codes, recons = 0.0, [], []
    for batch in data.batches(500):
        code = model.encode(batch["x"])
        recon = model.decode(code)
        squared += (recon - batch["x"]).square().sum().item()
        codes.append(code.flatten())
        recons.append(recon.cpu())
    codes, recons = torch.cat(codes), torch.cat(recons)
    x = data.tensors["x"]
    _reconstruction_grid(x, recons[:64], run_dir)
    k = model.num_codes
    return {
        "mse": squared / x.numel(),
        "perplexity": perplexity(codes, k).item(),
        "usage": (torch.bincount(codes, minlength=k) > 0).float().mean().item(),
    }, recons


def _evaluate_vqvae(model: VQVAE, data: TensorData, run_dir: Path, config: Any = None) -> dict[str, float]:
    """Test pixel MSE, and perplexity and usage of the codes over the whole test split."""
    return tokenizer_quality(model, data, run_dir)[0]


register(
    Recipe(
        name="vqvae-mnist",
        summary="VQ-VAE: strided convs, residual stack, 7x7 grid of 128 EMA codes, dead-code restart",
        default=VQVAERun(VQVAEConfig(), adamw_linear(3000, 128, 2e-3, 100, 1000)),
        build=lambda c: VQVAE(c.model),
        data=mnist_splits,
        evaluate=_evaluate_vqvae,
        metric="mse",
        reference="stage 1 of the two-stage VQ-VAE; `vqvae-prior-mnist` trains the GPT prior on its codes",
    )
)


@dataclass(frozen=True)
class CodePriorRun:
    vqvae_run: str = ""
    """The `vqvae-mnist` run whose (frozen) VQ-VAE the prior models; required."""
    model: CodePriorConfig = CodePriorConfig()
    eval: SampleEval = SampleEval()
    train: TrainConfig = TrainConfig()


def _vqvae(config: CodePriorRun, device: torch.device | str = "cpu"):
    return load_parent(config.vqvae_run, ("vqvae-mnist",), "vqvae-run", device)


def _build_prior(config: CodePriorRun) -> CodePrior:
    """The prior around (a copy of) the VQ-VAE of config.vqvae_run."""
    return CodePrior(config.model, copy.deepcopy(_vqvae(config).model).cpu())


def _prior_splits(config: CodePriorRun, device: torch.device) -> tuple[TensorData, TensorData]:
    """MNIST train and test as code grids of the frozen VQ-VAE: "codes" (N, 7, 7), "y" (N,)."""
    vqvae = _vqvae(config, device).model
    splits = []
    for split in ("train", "test"):
        data = load_mnist(split, device)
        codes = torch.cat([vqvae.encode(b["x"]) for b in data.batches(EVAL_BATCH)])
        splits.append(TensorData({"codes": codes, "y": data.tensors["y"]}))
    return splits[0], splits[1]


def _evaluate_prior(
    model: CodePrior, data: TensorData, run_dir: Path, config: CodePriorRun
) -> dict[str, float]:
    """Test cross-entropy in nats per code; classifier-FID and label accuracy of decoded samples."""
    metrics = {"val_loss": mean_terms(model, data)["loss"]}
    samples = sample_grid(model, run_dir, config.eval.samples)
    labels = torch.arange(config.eval.samples) % 10
    return metrics | sample_quality(samples, load_mnist("test").tensors["x"], labels)


register(
    Recipe(
        name="vqvae-prior-mnist",
        summary="class-conditional GPT over a trained VQ-VAE's 7x7 codes; samples decode to digits",
        default=CodePriorRun(train=adamw_linear(1500, 128, 2e-3, 100, 500, keep_best="val_loss:min")),
        build=_build_prior,
        data=_prior_splits,
        evaluate=_evaluate_prior,
        samples="images",
        metric="fid",
        reference="two-stage VQ-VAE (PixelCNN prior in the paper, a GPT here): FID of decoded samples",
    )
)
