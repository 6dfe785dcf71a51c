"""The autoencoder recipes' data, grids and evaluations (recipes/autoencoders.py) on stand-in
models whose right answers are known; the end-to-end runs are in test_generative_recipes.py."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import deepzoo.recipes.autoencoders as autoencoders
from deepzoo.data.tensors import TensorData
from deepzoo.models.autoencoder import AutoencoderConfig
from deepzoo.nn.quantize import perplexity
from deepzoo.recipes.autoencoders import AutoencoderRun


@pytest.mark.parametrize(
    ("likelihood", "binarize", "splits"),
    [("bernoulli", True, "binarized"), ("bernoulli", False, "grey"), ("gaussian", True, "grey")],
)
def test_only_a_bernoulli_model_trains_on_binarized_images_and_only_when_asked(
    monkeypatch, likelihood, binarize, splits
):
    monkeypatch.setattr(autoencoders, "binarized_mnist_splits", lambda config, device: "binarized")
    monkeypatch.setattr(autoencoders, "mnist_splits", lambda config, device: "grey")
    config = AutoencoderRun(AutoencoderConfig(likelihood=likelihood), binarize=binarize)
    assert autoencoders._autoencoder_splits(config, torch.device("cpu")) == splits


@pytest.mark.parametrize(("n", "width", "rows"), [(70, 16, 4), (20, 16, 1), (5, 5, 1)])
def test_the_reconstruction_grid_puts_each_row_of_originals_above_its_reconstructions(
    monkeypatch, tmp_path, n, width, rows
):
    saved = {}
    monkeypatch.setattr(
        autoencoders, "save_image_grid", lambda images, path, nrow: saved.update(images=images, nrow=nrow)
    )
    x = torch.rand(n, 1, 4, 4)
    autoencoders._reconstruction_grid(x, x + 1, tmp_path)
    shown = rows * width
    expected = (
        torch.stack([x[:shown], x[:shown] + 1]).unflatten(1, (rows, width)).transpose(0, 1).flatten(0, 2)
    )
    assert saved["nrow"] == width and torch.equal(saved["images"], expected)
    assert torch.equal(saved["images"][width : 2 * width], x[:width] + 1)  # row 2: row 1's reconstructions


class _Tokenizer(torch.nn.Module):
    """Codes: the first 3 pixels x 10 (codes 0-9, and 15 once); decoding: the mean code / 10 everywhere."""

    num_codes = 16

    def encode(self, x):
        return (x.flatten(1)[:, :3] * 10).long()

    def decode(self, codes):
        return (codes.float().mean(1) / 10).view(-1, 1, 1, 1).expand(-1, 1, 4, 4)


def test_tokenizer_quality_scores_every_example_per_pixel(monkeypatch, tmp_path):
    """1,200 images (batches of 500, 500, 200): pixel MSE, perplexity and usage of all their codes,
    the reconstructions in order; the first 64 of them in the grid."""
    grid = {}
    monkeypatch.setattr(
        autoencoders, "_reconstruction_grid", lambda x, recon, run_dir: grid.update(x=x, recon=recon)
    )
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, 10, (1200, 1, 4, 4), generator=generator) / 10
    x[0, 0, 0, 0] = 1.5  # code 15: used once
    model = _Tokenizer()
    metrics, recons = autoencoders.tokenizer_quality(model, TensorData({"x": x}), tmp_path)
    codes = model.encode(x)
    assert torch.equal(recons, model.decode(codes))
    assert metrics["mse"] == pytest.approx((recons - x).square().mean().item(), rel=1e-6)
    assert metrics["perplexity"] == pytest.approx(perplexity(codes, 16).item(), rel=1e-6)
    assert metrics["usage"] == 11 / 16
    assert torch.equal(grid["x"], x) and torch.equal(grid["recon"], recons[:64])


class _VAE(torch.nn.Module):
    """A stand-in conditional VAE: loss = the batch's mean pixel; it records what it reconstructs."""

    conditional = True

    def loss(self, batch):
        return {"loss": batch["x"].mean()}

    def reconstruct(self, x, y):
        self.reconstructed = (x, y)
        return x

    def log_importance_weights(self, x, k, y=None):
        raise AssertionError("the bound is a stand-in here")


def test_the_vae_evaluation_bounds_the_first_test_images_and_reconstructs_with_their_labels(
    monkeypatch, tmp_path
):
    bounds = []

    def iwae_nll(log_weights, data, k, conditional):
        bounds.append((data, k, conditional))
        return {"nll": 91.5}

    monkeypatch.setattr(autoencoders, "iwae_nll", iwae_nll)
    monkeypatch.setattr(autoencoders, "sample_grid", lambda model, run_dir, n: torch.zeros(n, 1, 28, 28))
    monkeypatch.setattr(autoencoders, "sample_quality", lambda samples, reference, labels: {"fid": 3.0})
    monkeypatch.setattr(
        autoencoders, "load_mnist", lambda split: TensorData({"x": torch.zeros(2, 1, 28, 28)})
    )
    generator = torch.Generator().manual_seed(1)
    data = TensorData({"x": torch.rand(300, 1, 28, 28, generator=generator), "y": torch.arange(300) % 10})
    model = _VAE()
    config = AutoencoderRun(AutoencoderConfig(kind="cvae"))
    config = replace(config, eval=replace(config.eval, iwae_k=7, iwae_examples=40))
    record = autoencoders._evaluate_autoencoder(model, data, tmp_path, config)
    assert record == pytest.approx({"loss": data.tensors["x"].mean().item(), "nll_iwae7": 91.5, "fid": 3.0})
    ((subset, k, conditional),) = bounds
    assert torch.equal(subset.tensors["x"], data.tensors["x"][:40]) and (k, conditional) == (7, True)
    assert torch.equal(model.reconstructed[1], data.tensors["y"][:64])


class _Grids(torch.nn.Module):
    """A stand-in VQ-VAE: the code grid of an image is its first 2 x 2 pixels x 10."""

    def encode(self, x):
        return (x[:, 0, :2, :2] * 10).long()


def _split(n, seed):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 10, (n, 1, 28, 28), generator=generator) / 10
    return TensorData({"x": x, "y": torch.randint(0, 10, (n,), generator=generator)})


def test_the_prior_trains_on_the_code_grids_of_train_and_is_evaluated_on_those_of_test(monkeypatch):
    from types import SimpleNamespace

    splits = {"train": _split(30, 2), "test": _split(20, 3)}
    monkeypatch.setattr(autoencoders, "_vqvae", lambda config, device="cpu": SimpleNamespace(model=_Grids()))
    monkeypatch.setattr(autoencoders, "load_mnist", lambda split, device="cpu": splits[split])
    train, test = autoencoders._prior_splits(autoencoders.CodePriorRun(), torch.device("cpu"))
    for name, codes in (("train", train), ("test", test)):
        assert torch.equal(codes.tensors["codes"], (splits[name].tensors["x"][:, 0, :2, :2] * 10).long())
        assert torch.equal(codes.tensors["y"], splits[name].tensors["y"])


def test_the_prior_evaluation_takes_the_loss_over_every_test_grid_and_asks_for_each_digit(
    monkeypatch, tmp_path
):
    asked = {}

    class Prior(torch.nn.Module):
        def loss(self, batch):
            return {"loss": batch["codes"].float().mean()}

    def sample_quality(samples, reference, labels):
        asked.update(n=len(samples), labels=labels)
        return {"fid": 4.0, "label_accuracy": 0.5}

    monkeypatch.setattr(autoencoders, "sample_grid", lambda model, run_dir, n: torch.zeros(n, 1, 28, 28))
    monkeypatch.setattr(autoencoders, "sample_quality", sample_quality)
    monkeypatch.setattr(autoencoders, "load_mnist", lambda split: _split(2, 0))
    codes = torch.randint(0, 16, (1500, 2, 2), generator=torch.Generator().manual_seed(4))
    config = autoencoders.CodePriorRun()
    config = replace(config, eval=replace(config.eval, samples=25))
    record = autoencoders._evaluate_prior(Prior(), TensorData({"codes": codes}), tmp_path, config)
    assert record == pytest.approx(
        {"val_loss": codes.float().mean().item(), "fid": 4.0, "label_accuracy": 0.5}
    )
    assert asked["n"] == 25 and torch.equal(asked["labels"], torch.arange(25) % 10)
