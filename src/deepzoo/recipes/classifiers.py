"""Recipes of the classifier family on MNIST: CNNs, a ResNet, the feature classifier behind
classifier-FID, kNN, linear classifiers (SVM, softmax) and a two-layer network."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deepzoo.config import Index
from deepzoo.data.tensors import TensorData
from deepzoo.models.classifier import CNN, CNNConfig, ResNet, ResNetConfig
from deepzoo.models.features import FEATURE_CONFIG
from deepzoo.models.knn import KNN, KNNConfig
from deepzoo.models.linear import LinearClassifier, LinearConfig, TwoLayerConfig, TwoLayerNet
from deepzoo.recipes.common import adamw_linear, mnist_splits
from deepzoo.recipes.registry import Recipe, register
from deepzoo.train import checkpoint as ckpt
from deepzoo.train.config import TrainConfig


@dataclass(frozen=True)
class CNNRun:
    model: CNNConfig = CNNConfig()
    train: TrainConfig = TrainConfig()
    train_limit: Index = 0
    """Train on only the first this many training images (0: all 60,000); the test set stays whole."""
    validation: Index = 0
    """Hold out the last this many training images and evaluate on them instead of the test set
    (0: evaluate on the test set), to choose hyperparameters without looking at the test set."""


@dataclass(frozen=True)
class ResNetRun:
    model: ResNetConfig = ResNetConfig()
    train: TrainConfig = TrainConfig()
    train_limit: Index = 0
    """Train on only the first this many training images (0: all 60,000); the test set stays whole."""
    validation: Index = 0
    """Hold out the last this many training images and evaluate on them instead of the test set
    (0: evaluate on the test set), to choose hyperparameters without looking at the test set."""


@dataclass(frozen=True)
class LinearRun:
    model: LinearConfig = LinearConfig()
    train: TrainConfig = TrainConfig()
    train_limit: Index = 0
    """Train on only the first this many training images (0: all 60,000); the test set stays whole."""
    validation: Index = 0
    """Hold out the last this many training images and evaluate on them instead of the test set
    (0: evaluate on the test set), to choose hyperparameters without looking at the test set."""


@dataclass(frozen=True)
class TwoLayerRun:
    model: TwoLayerConfig = TwoLayerConfig()
    train: TrainConfig = TrainConfig()
    train_limit: Index = 0
    """Train on only the first this many training images (0: all 60,000); the test set stays whole."""
    validation: Index = 0
    """Hold out the last this many training images and evaluate on them instead of the test set
    (0: evaluate on the test set), to choose hyperparameters without looking at the test set."""


@dataclass(frozen=True)
class KNNRun:
    model: KNNConfig = KNNConfig()
    train_limit: Index = 0
    """Remember only the first this many training images (0: all 60,000)."""
    validation: Index = 0
    """Hold out the last this many training images and evaluate on them instead of the test set
    (0: evaluate on the test set), to choose hyperparameters without looking at the test set."""
    train: TrainConfig = TrainConfig(steps=0)


def _evaluate_classifier(
    model: nn.Module, data: TensorData, run_dir: Path, config: Any = None
) -> dict[str, float]:
    """Accuracy on all of `data`; the confusion matrix goes to run_dir/confusion.json and .png."""
    from deepzoo.metrics.classification import classification_metrics
    from deepzoo.viz import plot_confusion

    metrics, matrix = classification_metrics(model, data)
    ckpt.write_json(run_dir / "confusion.json", matrix.tolist())
    plot_confusion(matrix, run_dir / "confusion.png")
    if isinstance(model, KNN):
        metrics["k"] = float(model.k)
    return metrics


WIDE_CNN = FEATURE_CONFIG  # the feature classifier is the wide CNN, trained longer


BUILDERS: dict[type, Callable[[Any], nn.Module]] = {
    CNNConfig: CNN,
    ResNetConfig: ResNet,
    LinearConfig: LinearClassifier,
    TwoLayerConfig: TwoLayerNet,
    KNNConfig: KNN,
}


def _classifier(name: str, summary: str, default: Any, reference: str, **kw: Any) -> Recipe:
    """An MNIST classifier recipe, evaluated on the full test set; the model class follows from
    the type of the model config."""
    build = BUILDERS[type(default.model)]
    return register(
        Recipe(
            name=name,
            summary=summary,
            default=default,
            build=lambda c: build(c.model),
            data=kw.pop("data", _limited_splits),
            evaluate=_evaluate_classifier,
            metric="accuracy",
            reference=reference,
            **kw,
        )
    )


def _fit_knn(model: nn.Module, train: TensorData) -> None:
    model.fit(train.tensors["x"], train.tensors["y"])


def _limited_splits(config: Any, device: torch.device) -> tuple[TensorData, TensorData]:
    """(training images, evaluation images): the first `config.train_limit` (0: all) of MNIST's
    training images bar the last `config.validation`, and those last ones (validation > 0) or
    else the whole test split. The held-out images come after any limited training set, so the
    two never share an image."""
    train, test = mnist_splits(config, device)
    held_out, limit = config.validation, config.train_limit
    if held_out < 0 or limit < 0:
        raise ValueError(f"train-limit and validation must be >= 0, got {limit} and {held_out}")
    kept = len(train) - held_out
    if kept < 1:
        raise ValueError(f"validation {held_out} must leave some of the {len(train)} training images")
    if limit > kept:
        raise ValueError(
            f"train-limit {limit} exceeds the {kept} training images validation {held_out} leaves"
        )
    evaluation = TensorData(train[slice(kept, None)]) if held_out else test
    return TensorData(train[slice(0, limit or kept)]), evaluation


_classifier(
    "cnn-mnist",
    "small 3-stage CNN (conv-BN-ReLU, max-pool), tuned for time to 99% on a CPU",
    CNNRun(CNNConfig(channels=(16, 32, 64)), adamw_linear(900, 128, 3e-3, 50, 100)),
    "plain 3-layer CNN, SGD fp32: 99.1% in ~46 s on 2 cores; measured here 99.0% in 7.9 s",
)
_classifier(
    "cnn-mnist-wide",
    "wider CNN, two convs per stage, tuned for time to 99.5% on a CPU",
    CNNRun(WIDE_CNN, adamw_linear(540, 256, 5e-3, 30, 135)),
    "goal 99.5% in 60 s on 2 cores; measured here 99.5% in 50.9 s",
)
_classifier(
    "resnet-mnist",
    "ResNet of basic blocks (identity/projection skips, BatchNorm) on MNIST",
    ResNetRun(ResNetConfig(widths=(32, 64, 128), blocks_per_stage=1), adamw_linear(1200, 128, 5e-3, 50, 200)),
    "ResNets reach 99.5-99.7% on MNIST with longer training; measured here 99.32% in 90 s",
)
_classifier(
    "mnist-features",
    "the feature classifier behind classifier-FID (fixed seed; weights ship in the package)",
    CNNRun(WIDE_CNN, adamw_linear(1400, 256, 5e-3, 30, 350, seed=1234)),
    "the shipped weights: 99.6% test accuracy, see docs/classifiers.md",
)


_classifier(
    "knn-mnist",
    "k-nearest neighbours on raw pixels (L2), k by 5-fold cross-validation",
    KNNRun(KNNConfig(distance="l2")),
    "CS231n-style kNN on MNIST: about 96.9% (L2); measured here 97.17% (k = 3)",
    prepare=_fit_knn,
)
_classifier(
    "linear-svm-mnist",
    "linear classifier, multiclass SVM loss (margin 1) + L2, hand-written backward",
    LinearRun(LinearConfig(loss="svm", reg_strength=1e-4), adamw_linear(2000, 256, 1e-3, 0, 500)),
    "linear classifiers reach about 92% on MNIST; measured here 92.38%",
)
_classifier(
    "linear-softmax-mnist",
    "linear classifier, softmax cross-entropy + L2, hand-written backward",
    LinearRun(LinearConfig(loss="softmax", reg_strength=1e-4), adamw_linear(2000, 256, 1e-3, 0, 500)),
    "linear classifiers reach about 92% on MNIST; measured here 92.45%",
)
_classifier(
    "two-layer-mnist",
    "two-layer ReLU network (784-512-10) with a hand-written backward pass",
    TwoLayerRun(TwoLayerConfig(hidden=512), adamw_linear(4000, 128, 1e-3, 100, 500)),
    "a 784-512-10 MLP reaches about 98% on MNIST; measured here 98.27%",
)
