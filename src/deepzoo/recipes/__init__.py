"""Recipes: what `deepzoo train NAME` runs. With cli.py, the only place that wires data, models
and the trainer together.

registry.py holds the registry, common.py the pieces families share, runs.py train / resume /
load / load_parent; each family registers its recipes in its own module."""

import importlib

from deepzoo.recipes.common import SampleEval, write_dances, write_predictions, write_samples
from deepzoo.recipes.registry import RECIPES, Recipe, get_recipe, register
from deepzoo.recipes.runs import (
    LoadedRun,
    default_run_dir,
    load_parent,
    load_run,
    read_run_config,
    resume_recipe,
    train_recipe,
)

FAMILIES = (
    "classifiers", "language", "autoencoders", "diffusion", "gan", "likelihood", "contrastive", "rl",
    "detection", "shapes", "online", "vqgan", "dance",
)  # fmt: skip
"""Each family's module registers its recipes when imported; `deepzoo list` shows them in this order."""
for _family in FAMILIES:
    importlib.import_module(f"deepzoo.recipes.{_family}")

__all__ = [
    "RECIPES",
    "LoadedRun",
    "Recipe",
    "SampleEval",
    "default_run_dir",
    "get_recipe",
    "load_parent",
    "load_run",
    "read_run_config",
    "register",
    "resume_recipe",
    "train_recipe",
    "write_dances",
    "write_predictions",
    "write_samples",
]
