"""Recipes of the autoencoder family: AE, VAE, CVAE, VQ-VAE and the VQ-VAE's GPT prior."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deepzoo.config import from_dict
from deepzoo.data.mnist import load_mnist
from deepzoo.data.tensors import TensorData
from deepzoo.metrics.fid import sample_quality
from deepzoo.metrics.likelihood import iwae_nll
from deepzoo.models.autoencoder import Autoencoder, AutoencoderConfig
from deepzoo.models.vqvae import VQVAE, CodePrior, CodePriorConfig, VQVAEConfig
from deepzoo.nn.quantize import perplexity
from deepzoo.recipes import Recipe, SampleEval, _adamw, _sample_grid, register
from deepzoo.train import checkpoint as ckpt
from deepzoo.train.trainer import TrainConfig
from deepzoo.viz import save_image_grid


def _reconstruction_grid(x: torch.Tensor, recon: torch.Tensor, run_dir: Path) -> None:
    """Originals (odd rows) above their reconstructions (even rows), 16 wide."""
    pairs = torch.stack([x[:64].cpu(), recon[:64].float().cpu()]).unflatten(1, (4, 16)).transpose(0, 1)
    save_image_grid(pairs.flatten(0, 2), run_dir / "samples" / "reconstructions.png", nrow=16)


def _mean_terms(model: nn.Module, data: TensorData, batch_size: int = 1000) -> dict[str, float]:
    """The model's loss terms averaged over all of `data`."""
    sums: dict[str, float] = {}
    for batch in data.batches(batch_size):
        size = len(next(iter(batch.values())))
        for key, value in model.loss(batch).items():
            sums[key] = sums.get(key, 0.0) + float(value) * size
    return {k: v / len(data) for k, v in sums.items()}


# ------------------------------------------------------------------ AE, VAE, CVAE
@dataclass(frozen=True)
class AutoencoderRun:
    model: AutoencoderConfig = AutoencoderConfig()
    eval: SampleEval = SampleEval()
    binarize: bool = True
    """Bernoulli models: train on dynamically binarized images, test on one fixed binarization."""
    train: TrainConfig = TrainConfig()


def _autoencoder_splits(config: AutoencoderRun, device: torch.device) -> tuple[TensorData, TensorData]:
    train, test = load_mnist("train", device), load_mnist("test", device)
    if config.model.likelihood == "bernoulli" and config.binarize:
        generator = torch.Generator().manual_seed(0)
        x = torch.bernoulli(test.tensors["x"].cpu(), generator=generator).to(device)
        test = TensorData({**test.tensors, "x": x})
    return train, test


def _evaluate_autoencoder(
    model: Autoencoder, data: TensorData, run_dir: Path, config: AutoencoderRun
) -> dict[str, float]:
    """Test loss terms (nats per image), the IWAE bound, classifier-FID of samples (and the feature
    classifier's accuracy on them for the CVAE); reconstruction and sample grids."""
    metrics = _mean_terms(model, data)
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
    samples = _sample_grid(model, run_dir, n)
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
        train=_adamw(3000, 128, 2e-3, 100, 1000),
    ),
    "recon (nats/image)",
    "a deterministic code has no likelihood; see recon and the FID of its samples",
)
_autoencoder(
    "vae-mnist",
    "VAE (MLP 784-512-512-32, Bernoulli decoder) on dynamically binarized MNIST, IWAE test NLL",
    AutoencoderRun(
        AutoencoderConfig(kind="vae", arch="mlp", latent=32, hidden=512),
        train=_adamw(70_000, 128, 1e-3, 500, 14_000, max_seconds=600.0),
    ),
    "nll_iwae100 (nats)",
    "one-stochastic-layer VAE: 86.76 nats (IWAE k=5000, Burda et al., 2016); goal here 95 in 10 minutes",
)
_autoencoder(
    "cvae-mnist",
    "conditional VAE (label one-hot into encoder and decoder), class-conditional samples",
    AutoencoderRun(
        AutoencoderConfig(kind="cvae", arch="mlp", latent=4, hidden=512),
        train=_adamw(6000, 128, 1e-3, 200, 2000),
    ),
    "label_accuracy",
    "goal: the feature classifier labels at least 95% of the samples as the asked digit",
)


# ------------------------------------------------------------------ VQ-VAE and its prior
@dataclass(frozen=True)
class VQVAERun:
    model: VQVAEConfig = VQVAEConfig()
    train: TrainConfig = TrainConfig()


def _mnist(config: Any, device: torch.device) -> tuple[TensorData, TensorData]:
    return load_mnist("train", device), load_mnist("test", device)


def _evaluate_vqvae(model: VQVAE, data: TensorData, run_dir: Path, config: Any = None) -> dict[str, float]:
    """Test pixel MSE, and perplexity and usage of the codes over the whole test split."""
    squared, codes = 0.0, []
    for batch in data.batches(1000):
        code = model.encode(batch["x"])
        squared += (model.decode(code) - batch["x"]).square().sum().item()
        codes.append(code.flatten())
    codes = torch.cat(codes)
    x = data.tensors["x"]
    _reconstruction_grid(x, model.reconstruct(x[:64]), run_dir)
    k = model.config.num_codes
    return {
        "mse": squared / x.numel(),
        "perplexity": perplexity(codes, k).item(),
        "usage": (torch.bincount(codes, minlength=k) > 0).float().mean().item(),
    }


register(
    Recipe(
        name="vqvae-mnist",
        summary="VQ-VAE: strided convs, residual stack, 7x7 grid of 128 EMA codes, dead-code restart",
        default=VQVAERun(VQVAEConfig(), _adamw(3000, 128, 2e-3, 100, 1000)),
        build=lambda c: VQVAE(c.model),
        data=_mnist,
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


def _vqvae_run(config: CodePriorRun) -> Path:
    run = Path(config.vqvae_run)
    if not config.vqvae_run or not (run / ckpt.CONFIG).is_file():
        raise FileNotFoundError(
            f"--vqvae-run must name a trained vqvae-mnist run directory (got {config.vqvae_run!r}); "
            "train one with `deepzoo train vqvae-mnist`"
        )
    return run


def _build_prior(config: CodePriorRun) -> CodePrior:
    """The prior around the VQ-VAE of config.vqvae_run, whose config and weights it takes."""
    from deepzoo.recipes import load_run

    run = _vqvae_run(config)
    record = json.loads((run / ckpt.CONFIG).read_text())
    if record["recipe"] != "vqvae-mnist":
        raise ValueError(f"{run} is a {record['recipe']!r} run, not a vqvae-mnist run")
    vqvae = from_dict(VQVAERun, record["config"]).model
    prior = CodePrior(replace(config.model, vqvae=vqvae))
    prior.vqvae.load_state_dict(load_run(run).model.state_dict())
    return prior


def _prior_splits(config: CodePriorRun, device: torch.device) -> tuple[TensorData, TensorData]:
    """MNIST train and test as code grids of the frozen VQ-VAE: "codes" (N, 7, 7), "y" (N,)."""
    from deepzoo.recipes import load_run

    vqvae = load_run(_vqvae_run(config), device).model
    splits = []
    for split in ("train", "test"):
        data = load_mnist(split, device)
        codes = torch.cat([vqvae.encode(b["x"]) for b in data.batches(1000)])
        splits.append(TensorData({"codes": codes, "y": data.tensors["y"]}))
    return splits[0], splits[1]


def _evaluate_prior(
    model: CodePrior, data: TensorData, run_dir: Path, config: CodePriorRun
) -> dict[str, float]:
    """Test cross-entropy in nats per code; classifier-FID and label accuracy of decoded samples."""
    metrics = {"val_loss": _mean_terms(model, data)["loss"]}
    samples = _sample_grid(model, run_dir, config.eval.samples)
    labels = torch.arange(config.eval.samples) % 10
    return metrics | sample_quality(samples, load_mnist("test").tensors["x"], labels)


register(
    Recipe(
        name="vqvae-prior-mnist",
        summary="class-conditional GPT over a trained VQ-VAE's 7x7 codes; samples decode to digits",
        default=CodePriorRun(train=_adamw(1500, 128, 2e-3, 100, 500, keep_best="val_loss:min")),
        build=_build_prior,
        data=_prior_splits,
        evaluate=_evaluate_prior,
        metric="fid",
        reference="two-stage VQ-VAE (PixelCNN prior in the paper, a GPT here): FID of decoded samples",
    )
)
