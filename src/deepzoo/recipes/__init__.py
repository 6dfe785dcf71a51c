"""The recipe registry: name -> (config, model factory, data, evaluation). With cli.py, the only
place that wires data, models and the trainer together."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deepzoo.config import from_dict, to_dict
from deepzoo.data.digits import sorting_pairs
from deepzoo.data.mnist import load_mnist
from deepzoo.data.shakespeare import VOCAB, load_shakespeare
from deepzoo.data.tensors import TensorData
from deepzoo.metrics.features import FEATURE_CONFIG
from deepzoo.models.char_lstm import CharLSTM, CharLSTMConfig
from deepzoo.models.classifier import CNN, CNNConfig, ResNet, ResNetConfig
from deepzoo.models.gpt import GPT, GPTConfig
from deepzoo.models.knn import KNN, KNNConfig
from deepzoo.models.linear import LinearClassifier, LinearConfig, TwoLayerConfig, TwoLayerNet
from deepzoo.models.seq2seq import Seq2Seq, Seq2SeqConfig
from deepzoo.train import checkpoint as ckpt
from deepzoo.train import distributed
from deepzoo.train.trainer import TrainConfig, Trainer, TrainResult


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
    evaluate: Callable[[nn.Module, TensorData, Path, Any], dict[str, float]]
    """(model, evaluation split, run directory, run config) -> metrics; may write PNGs to the run."""
    metric: str
    """The headline metric, as the evaluation names it."""
    reference: str
    """Published or peer numbers to compare with."""
    prepare: Callable[[nn.Module, TensorData], None] | None = None
    """Fits what is not learned by gradient steps (a kNN's memory) from the train split; also
    called when a run is loaded."""


# ------------------------------------------------------------------ shared by generative recipes
@dataclass(frozen=True)
class SampleEval:
    """What each evaluation of a generative recipe measures."""

    samples: int = 1000
    """Samples drawn for classifier-FID (against the whole test split) and label accuracy."""
    iwae_k: int = 100
    """Likelihood models: importance samples of the bound during training (the benchmark uses 1000)."""
    iwae_examples: int = 1000
    """Likelihood models: test images the bound is averaged over during training (the benchmark: all)."""


def _sample_grid(model: nn.Module, run_dir: Path, n: int, **kw: Any) -> torch.Tensor:
    """n samples of `model.sample` (labels 0..9 repeating for conditional models), drawn 500 at a
    time from a seeded generator; the first 100 go to run_dir/samples/samples.png, 10 wide."""
    from deepzoo.viz import save_image_grid

    generator = torch.Generator().manual_seed(0)
    samples = torch.cat(
        [model.sample(min(500, n - i), generator=generator, **kw).cpu() for i in range(0, n, 500)]
    )
    save_image_grid(samples[:100], run_dir / "samples" / "samples.png", nrow=10)
    return samples


# ------------------------------------------------------------------ image classifiers
@dataclass(frozen=True)
class CNNRun:
    model: CNNConfig = CNNConfig()
    train: TrainConfig = TrainConfig()


@dataclass(frozen=True)
class ResNetRun:
    model: ResNetConfig = ResNetConfig()
    train: TrainConfig = TrainConfig()


@dataclass(frozen=True)
class LinearRun:
    model: LinearConfig = LinearConfig()
    train: TrainConfig = TrainConfig()


@dataclass(frozen=True)
class TwoLayerRun:
    model: TwoLayerConfig = TwoLayerConfig()
    train: TrainConfig = TrainConfig()


@dataclass(frozen=True)
class KNNRun:
    model: KNNConfig = KNNConfig()
    train: TrainConfig = TrainConfig(steps=0)


def _mnist_splits(config: Any, device: torch.device) -> tuple[TensorData, TensorData]:
    return load_mnist("train", device), load_mnist("test", device)


def _evaluate_classifier(
    model: nn.Module, data: TensorData, run_dir: Path, config: Any = None
) -> dict[str, float]:
    """Accuracy on all of `data`; the confusion matrix goes to run_dir/confusion.json."""
    from deepzoo.metrics.classification import classification_metrics

    metrics, matrix = classification_metrics(model, data)
    ckpt.write_json(run_dir / "confusion.json", matrix.tolist())
    if isinstance(model, KNN):
        metrics["k"] = float(model.k)
    return metrics


def _adamw(steps: int, batch_size: int, lr: float, warmup: int, eval_every: int, **kw) -> TrainConfig:
    """AdamW with linear warm-up and linear decay to zero: the classifiers' schedule."""
    return TrainConfig(
        steps=steps,
        batch_size=batch_size,
        optimizer="adamw",
        lr=lr,
        schedule="linear",
        warmup_steps=warmup,
        eval_every=eval_every,
        checkpoint_every=eval_every * 4,
        **kw,
    )


RECIPES: dict[str, Recipe] = {}


def register(recipe: Recipe) -> Recipe:
    if recipe.name in RECIPES:
        raise ValueError(f"recipe {recipe.name!r} is registered twice")
    RECIPES[recipe.name] = recipe
    return recipe


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
            data=_mnist_splits,
            evaluate=_evaluate_classifier,
            metric="accuracy",
            reference=reference,
            **kw,
        )
    )


def _fit_knn(model: nn.Module, train: TensorData) -> None:
    model.fit(train.tensors["x"], train.tensors["y"])


_classifier(
    "cnn-mnist",
    "small 3-stage CNN (conv-BN-ReLU, max-pool), tuned for time to 99% on a CPU",
    CNNRun(CNNConfig(channels=(16, 32, 64)), _adamw(900, 128, 3e-3, 50, 100)),
    "plain 3-layer CNN, SGD fp32: 99.1% in ~46 s on 2 cores; measured here 99.0% in 7.9 s",
)
_classifier(
    "cnn-mnist-wide",
    "wider CNN, two convs per stage, tuned for time to 99.5% on a CPU",
    CNNRun(WIDE_CNN, _adamw(540, 256, 5e-3, 30, 135)),
    "goal 99.5% in 60 s on 2 cores; measured here 99.5% in 50.9 s",
)
_classifier(
    "resnet-mnist",
    "ResNet of basic blocks (identity/projection skips, BatchNorm) on MNIST",
    ResNetRun(ResNetConfig(widths=(32, 64, 128), blocks_per_stage=1), _adamw(1200, 128, 5e-3, 50, 200)),
    "ResNets reach 99.5-99.7% on MNIST with longer training; measured here 99.32% in 90 s",
)
_classifier(
    "mnist-features",
    "the feature classifier behind classifier-FID (fixed seed; weights ship in the package)",
    CNNRun(WIDE_CNN, _adamw(1400, 256, 5e-3, 30, 350, seed=1234)),
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
    LinearRun(LinearConfig(loss="svm", reg_strength=1e-4), _adamw(2000, 256, 1e-3, 0, 500)),
    "linear classifiers reach about 92% on MNIST; measured here 92.38%",
)
_classifier(
    "linear-softmax-mnist",
    "linear classifier, softmax cross-entropy + L2, hand-written backward",
    LinearRun(LinearConfig(loss="softmax", reg_strength=1e-4), _adamw(2000, 256, 1e-3, 0, 500)),
    "linear classifiers reach about 92% on MNIST; measured here 92.45%",
)
_classifier(
    "two-layer-mnist",
    "two-layer ReLU network (784-512-10) with a hand-written backward pass",
    TwoLayerRun(TwoLayerConfig(hidden=512), _adamw(4000, 128, 1e-3, 100, 500)),
    "a 784-512-10 MLP reaches about 98% on MNIST; measured here 98.27%",
)


# ------------------------------------------------------------------ language models
@dataclass(frozen=True)
class TextWindows:
    """How tiny-shakespeare is cut into training windows."""

    block_size: int = 128
    """Characters per training window (the model sees block_size inputs)."""
    stride: int = 32
    """Offset between consecutive training windows (validation windows never overlap)."""


@dataclass(frozen=True)
class CharLSTMRun:
    model: CharLSTMConfig = CharLSTMConfig()
    data: TextWindows = TextWindows()
    train: TrainConfig = TrainConfig()


def _shakespeare_splits(config: Any, device: torch.device) -> tuple[TensorData, TensorData]:
    block = config.data.block_size
    return (
        load_shakespeare("train", block, config.data.stride, device),
        load_shakespeare("val", block, block, device),
    )


def _evaluate_language_model(
    model: nn.Module, data: TensorData, run_dir: Path, config: Any = None
) -> dict[str, float]:
    """Validation cross-entropy in nats per character over every validation window."""
    total, count = 0.0, 0
    for batch in data.batches(256):
        n = batch["tokens"][:, 1:].numel()
        total += model.loss(batch)["loss"].item() * n
        count += n
    return {"val_loss": total / count}


register(
    Recipe(
        name="char-lstm-shakespeare",
        summary="character-level 2-layer LSTM language model on tiny-shakespeare, truncated BPTT",
        default=CharLSTMRun(
            CharLSTMConfig(),
            TextWindows(),
            _adamw(600, 32, 3e-3, 30, 150, grad_clip=1.0, keep_best="val_loss:min"),
        ),
        build=lambda c: CharLSTM(c.model),
        data=_shakespeare_splits,
        evaluate=_evaluate_language_model,
        metric="val_loss (nats/char)",
        reference="char-rnn LSTMs reach about 1.5 nats/char trained long; measured here 1.753 in 3.5 min",
    )
)


@dataclass(frozen=True)
class GPTRun:
    model: GPTConfig = GPTConfig()
    data: TextWindows = TextWindows()
    train: TrainConfig = TrainConfig()


register(
    Recipe(
        name="gpt-shakespeare",
        summary="character-level GPT (4 layers, 4 heads, 128 wide, RoPE) on tiny-shakespeare",
        default=GPTRun(
            GPTConfig(vocab_size=len(VOCAB), block_size=64, charset=VOCAB),
            TextWindows(block_size=64, stride=16),
            _adamw(650, 32, 3e-3, 30, 130, grad_clip=1.0, keep_best="val_loss:min"),
        ),
        build=lambda c: GPT(c.model),
        data=_shakespeare_splits,
        evaluate=_evaluate_language_model,
        metric="val_loss (nats/char)",
        reference="nanoGPT CPU config: 1.886 in 72 s here; measured 1.88 in 28.1 s, 1.537 in 5 min",
    )
)


@dataclass(frozen=True)
class Seq2SeqRun:
    model: Seq2SeqConfig = Seq2SeqConfig()
    train: TrainConfig = TrainConfig()


def _sorting_splits(config: Any, device: torch.device) -> tuple[TensorData, TensorData]:
    return sorting_pairs(50_000, seed=0).to(device), sorting_pairs(2_000, seed=1).to(device)


def _evaluate_seq2seq(
    model: nn.Module, data: TensorData, run_dir: Path, config: Any = None
) -> dict[str, float]:
    """Exact match: the greedy output equals the whole target (tokens after BOS, EOS included)."""
    correct = 0
    for batch in data.batches(500):
        expected = batch["target"][:, 1:]
        predicted = model.greedy(batch["source"], expected.shape[1])
        correct += (predicted == expected).all(dim=1).sum().item()
    return {"exact_match": correct / len(data)}


register(
    Recipe(
        name="sort-digits",
        summary="encoder-decoder Transformer sorting 4-12 digits (cross-attention, padding masks)",
        default=Seq2SeqRun(Seq2SeqConfig(), _adamw(1500, 128, 2e-3, 100, 500, grad_clip=1.0)),
        build=lambda c: Seq2Seq(c.model),
        data=_sorting_splits,
        evaluate=_evaluate_seq2seq,
        metric="exact_match",
        reference="greedy exact match on 2,000 held-out sequences; measured here 100% (1500 steps, 74 s)",
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
    name: str,
    config: Any | None = None,
    run_dir: str | Path | None = None,
    evaluate: bool = True,
) -> TrainResult:
    """Train recipe `name` under `config` (its default when None) into `run_dir`; with
    `evaluate=False` the recipe's evaluation is skipped (for speed measurements)."""
    recipe = get_recipe(name)
    config = recipe.default if config is None else config
    info = distributed.setup(config.train.device)
    run_dir = distributed.broadcast_object(str(run_dir or default_run_dir(name)), info)
    return _fit(recipe, config, Path(run_dir), resume=False, evaluate=evaluate)


def resume_recipe(run_dir: str | Path) -> TrainResult:
    """Continue the run in `run_dir` from its checkpoint, with its saved config."""
    recipe, config = read_run_config(run_dir)
    return _fit(recipe, config, Path(run_dir), resume=True)


def _fit(recipe: Recipe, config: Any, run_dir: Path, resume: bool, evaluate: bool = True) -> TrainResult:
    info = distributed.setup(config.train.device)
    torch.manual_seed(config.train.seed)
    model = recipe.build(config)
    train_data, eval_data = recipe.data(config, info.device)
    if recipe.prepare is not None:
        recipe.prepare(model.to(info.device), train_data)
    trainer = Trainer(
        model,
        train_data,
        config.train,
        run_dir,
        evaluate=(lambda m, step, d: recipe.evaluate(m, eval_data, d, config)) if evaluate else None,
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
    """The trained model of `run_dir`, in eval mode on `device`: the best evaluation's weights when
    the run kept them, else the EMA weights, else the last ones."""
    run_dir = Path(run_dir)
    recipe, config = read_run_config(run_dir)
    model = recipe.build(config)
    ckpt.recover_checkpoint(run_dir)
    candidates = [run_dir / name for name in (ckpt.BEST_WEIGHTS, ckpt.EMA_WEIGHTS, ckpt.WEIGHTS)]
    weights = next((path for path in candidates if path.exists()), None)
    if weights is None:
        raise FileNotFoundError(f"{run_dir} holds no weights ({ckpt.WEIGHTS})")
    ckpt.load_weights(weights, model)
    model = model.to(device)
    if recipe.prepare is not None:
        recipe.prepare(model, recipe.data(config, torch.device(device))[0])
    return LoadedRun(recipe, config, model.eval(), ckpt.file_step(weights))


# ------------------------------------------------------------------ the other families register here
from deepzoo.recipes import autoencoders, diffusion  # noqa: E402, F401
