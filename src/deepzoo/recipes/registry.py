"""The recipe registry: name -> what `deepzoo train NAME` runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from torch import nn

from deepzoo.data.tensors import TensorData

SampleKind = Literal["images", "text", "episode", "predictions", "dance"]
SAMPLE_KINDS = (None, *get_args(SampleKind))
"""What a recipe's `samples` may name (None: the model does not sample)."""


@dataclass(frozen=True)
class Recipe:
    """A default config, a model factory, data and evaluation."""

    name: str
    summary: str
    default: Any
    """The run config: a frozen dataclass with fields `model` and `train` (and maybe more)."""
    build: Callable[[Any], nn.Module]
    data: Callable[[Any, torch.device], tuple[TensorData, TensorData]]
    """(train split, evaluation split) on the device."""
    evaluate: Callable[[nn.Module, TensorData, Path, Any], dict[str, float]]
    """(model, evaluation split, run directory, run config) -> metrics; may write files to the run."""
    metric: str
    """The headline metric, as the evaluation names it."""
    reference: str
    """Published or peer numbers to compare with."""
    prepare: Callable[[nn.Module, TensorData], None] | None = None
    """Fits what is not learned by gradient steps (a kNN's memory) from the train split; also
    called when a run is loaded."""
    initialize: Callable[[nn.Module, Any], None] | None = None
    """(fresh model, run config): sets a new run's starting weights before its first step (a
    transfer from a pretrained run); not called on resume or load, where the run's own weights rule."""
    eval_split: str = "test"
    """What the evaluation split is (the final summary names it): test, or val; a config with a
    `validation` count above 0 evaluates on held-out training examples instead (`split`)."""
    samples: SampleKind | None = None
    """What `model.sample` draws, for `deepzoo sample` to write (None: the model does not sample;
    episode: the rendered frames of one episode; predictions: the model does not sample, `draw`
    shows its predictions on examples of the evaluation split)."""
    draw: Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor] | None = None
    """(model, batch of N examples of the evaluation split) -> pictures (N, k, 3, H, W), k per
    example (the input, the truth, the prediction...), for `deepzoo sample` (samples="predictions")."""

    def split(self, config: Any) -> str:
        """The split `config` evaluates on: 'val' when it holds out training examples, else eval_split."""
        return "val" if getattr(config, "validation", 0) else self.eval_split

    def evaluated_on(self, config: Any) -> tuple:
        """What picks the examples `config` is evaluated on besides the recipe: (split, held-out
        count, classes kept); two runs compare (an ensemble, a search's trials) only when equal."""
        return self.split(config), getattr(config, "validation", 0), getattr(config, "classes", ())

    @property
    def metric_key(self) -> str:
        """The headline metric's key in the evaluation's results (the metric without its unit)."""
        return self.metric.split(" (")[0]

    @property
    def maximize(self) -> bool:
        """Whether a higher headline metric is better (accuracy) or a lower one (a loss, FID)."""
        if self.metric_key not in HIGHER_IS_BETTER + LOWER_IS_BETTER:
            raise ValueError(f"recipe {self.name!r}: metric {self.metric_key!r} has no known direction")
        return self.metric_key in HIGHER_IS_BETTER


HIGHER_IS_BETTER = (
    "accuracy", "label_accuracy", "exact_match", "zero_shot_accuracy", "music_to_motion_recall@1",
    "mean_return", "reward", "miou", "map", "map_50", "mask_map", "mask_map_50", "bas",
)  # fmt: skip
LOWER_IS_BETTER = (
    "val_loss", "recon", "nll_iwae100", "nll", "mse", "fid", "fid_k", "rfid", "bpd", "chamfer", "mpjpe",
)  # fmt: skip

RECIPES: dict[str, Recipe] = {}


def register(recipe: Recipe) -> Recipe:
    """Add `recipe` to RECIPES; refused: a name taken, a samples kind `deepzoo sample` cannot
    write, predictions without `draw`. (A metric of unknown direction is refused only where a
    direction is needed: `maximize`, for keep_best and search.)"""
    if recipe.name in RECIPES:
        raise ValueError(f"recipe {recipe.name!r} is registered twice")
    if recipe.samples not in SAMPLE_KINDS:
        raise ValueError(f"recipe {recipe.name!r}: samples {recipe.samples!r} is not one of {SAMPLE_KINDS}")
    if recipe.samples == "predictions" and recipe.draw is None:
        raise ValueError(f"recipe {recipe.name!r}: samples 'predictions' needs `draw`")
    RECIPES[recipe.name] = recipe
    return recipe


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r}; `deepzoo list` shows the {len(RECIPES)} recipes")
    return RECIPES[name]
