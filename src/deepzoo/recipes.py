"""The recipe registry: name -> (config, model factory, data, evaluation). With cli.py, the only
place that wires data, models and the trainer together."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deepzoo.config import from_dict, to_dict
from deepzoo.data.mnist import load_mnist
from deepzoo.data.tensors import TensorData
from deepzoo.models.classifier import CNN, CNNConfig, ResNet, ResNetConfig
from deepzoo.train import checkpoint as ckpt
from deepzoo.train import distributed
from deepzoo.train.trainer import Trainer, TrainConfig, TrainResult


@dataclass(frozen=True)
class Recipe:
    """What `deepzoo train NAME` runs: a default config, a model factory, data and evaluation."""

    name: str
    summary: str
    default: Any
    """The run config: a frozen dataclass with fields `model` and `train` (and maybe more)."""
    build: Callable[[Any], nn.Module]
    data: Callable[[Any, torch.device], tuple[TensorData, TensorData]]
    """(train split, evaluation split) on the device."""
    evaluate: Callable[[nn.Module, TensorData, Path], dict[str, float]]
    metric: str
    """The headline metric, as the evaluation names it."""
    reference: str
    """Published or peer numbers to compare with."""


# ------------------------------------------------------------------ image classifiers
@dataclass(frozen=True)
class CNNRun:
    model: CNNConfig = CNNConfig()
    train: TrainConfig = TrainConfig()


@dataclass(frozen=True)
class ResNetRun:
    model: ResNetConfig = ResNetConfig()
    train: TrainConfig = TrainConfig()


def _mnist_splits(config: Any, device: torch.device) -> tuple[TensorData, TensorData]:
    return load_mnist("train", device), load_mnist("test", device)


def _evaluate_classifier(model: nn.Module, data: TensorData, run_dir: Path) -> dict[str, float]:
    """Accuracy on all of `data`; the confusion matrix goes to run_dir/confusion.json."""
    from deepzoo.metrics.classification import classification_metrics

    metrics, matrix = classification_metrics(model, data)
    ckpt.write_json(run_dir / "confusion.json", matrix.tolist())
    return metrics


_CLASSIFIER_TRAIN = TrainConfig(
    steps=1400,
    batch_size=128,
    optimizer="sgd",
    lr=0.1,
    momentum=0.9,
    nesterov=True,
    weight_decay=5e-4,
    schedule="linear",
    warmup_steps=100,
    eval_every=200,
    checkpoint_every=700,
)

RECIPES: dict[str, Recipe] = {}


def register(recipe: Recipe) -> Recipe:
    if recipe.name in RECIPES:
        raise ValueError(f"recipe {recipe.name!r} is registered twice")
    RECIPES[recipe.name] = recipe
    return recipe


register(
    Recipe(
        name="cnn-mnist",
        summary="3-stage CNN (conv-BN-ReLU, max-pool) on MNIST",
        default=CNNRun(CNNConfig(channels=(32, 64, 128)), _CLASSIFIER_TRAIN),
        build=lambda c: CNN(c.model),
        data=_mnist_splits,
        evaluate=_evaluate_classifier,
        metric="accuracy",
        reference="plain 3-layer CNN, SGD fp32: 99.1% in ~46 s on 2 cores (issue #2)",
    )
)
register(
    Recipe(
        name="resnet-mnist",
        summary="ResNet of basic blocks (identity/projection skips, BatchNorm) on MNIST",
        default=ResNetRun(ResNetConfig(), _CLASSIFIER_TRAIN),
        build=lambda c: ResNet(c.model),
        data=_mnist_splits,
        evaluate=_evaluate_classifier,
        metric="accuracy",
        reference="ResNets reach 99.5-99.7% on MNIST without augmentation",
    )
)
register(
    Recipe(
        name="mnist-features",
        summary="the feature classifier behind classifier-FID (fixed seed; weights ship in the package)",
        default=CNNRun(
            CNNConfig(channels=(32, 64, 128), convs_per_stage=2, feature_dim=128),
            replace(_CLASSIFIER_TRAIN, steps=2800, seed=1234, eval_every=700),
        ),
        build=lambda c: CNN(c.model),
        data=_mnist_splits,
        evaluate=_evaluate_classifier,
        metric="accuracy",
        reference="the shipped weights: see docs/classifiers.md",
    )
)


# ------------------------------------------------------------------ running and loading
def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r}; `deepzoo list` shows the {len(RECIPES)} recipes")
    return RECIPES[name]


def default_run_dir(recipe: str, root: str | Path = "runs") -> Path:
    """runs/<recipe>/<timestamp>, with a numeric suffix when that exists already."""
    base = Path(root) / recipe / time.strftime("%Y%m%d-%H%M%S")
    candidate, i = base, 1
    while candidate.exists():
        candidate, i = base.with_name(f"{base.name}-{i}"), i + 1
    return candidate


def train_recipe(
    name: str, config: Any | None = None, run_dir: str | Path | None = None
) -> TrainResult:
    """Train recipe `name` under `config` (its default when None) into `run_dir`."""
    recipe = get_recipe(name)
    config = recipe.default if config is None else config
    info = distributed.setup(config.train.device)
    run_dir = distributed.broadcast_object(str(run_dir or default_run_dir(name)), info)
    return _fit(recipe, config, Path(run_dir), resume=False)


def resume_recipe(run_dir: str | Path) -> TrainResult:
    """Continue the run in `run_dir` from its checkpoint, with its saved config."""
    recipe, config = read_run_config(run_dir)
    return _fit(recipe, config, Path(run_dir), resume=True)


def _fit(recipe: Recipe, config: Any, run_dir: Path, resume: bool) -> TrainResult:
    info = distributed.setup(config.train.device)
    torch.manual_seed(config.train.seed)
    model = recipe.build(config)
    train_data, eval_data = recipe.data(config, info.device)
    trainer = Trainer(
        model,
        train_data,
        config.train,
        run_dir,
        evaluate=lambda m, step, d: recipe.evaluate(m, eval_data, d),
        config_record={"recipe": recipe.name, "config": to_dict(config)},
        resume=resume,
    )
    return trainer.fit()


def read_run_config(run_dir: str | Path) -> tuple[Recipe, Any]:
    """The recipe and config a run directory was trained with."""
    path = Path(run_dir) / ckpt.CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a deepzoo run directory (no {ckpt.CONFIG})")
    record = json.loads(path.read_text())
    recipe = get_recipe(record["recipe"])
    return recipe, from_dict(type(recipe.default), record["config"])


@dataclass
class LoadedRun:
    recipe: Recipe
    config: Any
    model: nn.Module
    step: int


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> LoadedRun:
    """The trained model of `run_dir` (EMA weights when present), in eval mode on `device`."""
    run_dir = Path(run_dir)
    recipe, config = read_run_config(run_dir)
    model = recipe.build(config)
    ckpt.recover_checkpoint(run_dir)
    weights = run_dir / ckpt.EMA_WEIGHTS
    if not weights.exists():
        weights = run_dir / ckpt.WEIGHTS
    if not weights.exists():
        raise FileNotFoundError(f"{run_dir} holds no weights ({ckpt.WEIGHTS})")
    ckpt.load_weights(weights, model)
    return LoadedRun(recipe, config, model.to(device).eval(), ckpt.file_step(weights))
