"""Running and loading recipes: train, resume, load a run directory, load a two-stage run's parent."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deepzoo.config import check_ranges, from_dict, to_dict
from deepzoo.recipes.registry import Recipe, get_recipe
from deepzoo.train import checkpoint as ckpt
from deepzoo.train import distributed
from deepzoo.train.trainer import NO_PARAMETERS, Trainer, TrainResult


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
    overwrite: bool = False,
) -> TrainResult:
    """Train recipe `name` under `config` (its default when None; a field outside the range its
    annotation allows is refused: `config.check_ranges`) into `run_dir` (a run already
    there is refused unless `overwrite`); with `evaluate=False` the recipe's evaluation is skipped
    (for speed measurements)."""
    recipe = get_recipe(name)
    config = recipe.default if config is None else config
    check_ranges(config)
    info = distributed.setup(config.train.device)
    run_dir = distributed.broadcast_object(str(run_dir or default_run_dir(name)), info)
    return _fit(recipe, config, Path(run_dir), resume=False, evaluate=evaluate, overwrite=overwrite)


def train_variant_of(recipe: Recipe, config: Any, run_dir: str | Path, evaluate: bool = True) -> TrainResult:
    """Train `recipe` (a registered recipe or a variant of one made with dataclasses.replace, e.g.
    other data) under `config` into a new `run_dir`."""
    check_ranges(config)
    return _fit(recipe, config, Path(run_dir), resume=False, evaluate=evaluate)


def resume_recipe(run_dir: str | Path) -> TrainResult:
    """Continue the run in `run_dir` from its checkpoint, with its saved config."""
    recipe, config = read_run_config(run_dir)
    return _fit(recipe, config, Path(run_dir), resume=True)


def _fit(
    recipe: Recipe, config: Any, run_dir: Path, resume: bool, evaluate: bool = True, overwrite: bool = False
) -> TrainResult:
    info = distributed.setup(config.train.device)
    torch.manual_seed(config.train.seed)  # the same initialization on every rank
    model = recipe.build(config)
    if config.train.steps > 0 and not any(p.requires_grad for p in model.parameters()):
        raise ValueError(NO_PARAMETERS)  # before `prepare` fits a kNN to 60,000 images
    if recipe.initialize is not None and not resume:
        recipe.initialize(model, config)
    train_data, eval_data = recipe.data(config, info.device)
    if hasattr(train_data, "attach"):  # rollouts act with the model they train
        train_data.attach(model)
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
        dist=info,
        name=recipe.name,
        overwrite=overwrite,
    )
    return trainer.fit()


def read_run_config(run_dir: str | Path) -> tuple[Recipe, Any]:
    """The recipe and config a run directory was trained with."""
    path = Path(run_dir) / ckpt.CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a deepzoo run directory (no {ckpt.CONFIG})")
    fix = "restore it, or train the run again"
    try:
        record = json.loads(path.read_text())
        name, saved = record["recipe"], record["config"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise ckpt.damaged(path, err, fix) from err
    try:
        recipe = get_recipe(name)
    except KeyError as err:
        raise ckpt.DamagedRunFile(f"{path} names recipe {name!r}, which this deepzoo does not have") from err
    try:
        return recipe, from_dict(type(recipe.default), saved)
    except (ValueError, TypeError) as err:
        raise ckpt.damaged(path, err, fix) from err


@dataclass
class LoadedRun:
    recipe: Recipe
    config: Any
    model: nn.Module
    step: int


def load_run(
    run_dir: str | Path, device: str | torch.device = "cpu", weights: str | Path | None = None
) -> LoadedRun:
    """The trained model of `run_dir`, in eval mode on `device`: the best evaluation's weights when
    the run kept them, else the EMA weights, else the last ones; or the weights file `weights`
    (one of its snapshots)."""
    run_dir = Path(run_dir)
    recipe, config = read_run_config(run_dir)
    model = recipe.build(config)
    ckpt.recover_checkpoint(run_dir)
    candidates = [run_dir / name for name in (ckpt.BEST_WEIGHTS, ckpt.EMA_WEIGHTS, ckpt.WEIGHTS)]
    if weights is not None:
        candidates = [Path(weights)]
    weights = next((path for path in candidates if path.exists()), None)
    if weights is None:
        raise FileNotFoundError(f"{run_dir} holds no weights ({candidates[-1].name})")
    ckpt.load_weights(weights, model)
    model = model.to(device)
    if recipe.prepare is not None:
        recipe.prepare(model, recipe.data(config, torch.device(device))[0])
    return LoadedRun(recipe, config, model.eval(), ckpt.file_step(weights))


_parents: dict[tuple[str, str, float], LoadedRun] = {}


def load_parent(
    run_dir: str | Path, recipes: Sequence[str], field: str, device: str | torch.device = "cpu"
) -> LoadedRun:
    """The parent run of a two-stage recipe (a VQ-VAE under its prior, a flow under its reflow),
    checked to be one of `recipes`. `field` is the config field that names it, for the error
    messages. Loaded once per process for each (directory, device, weights version)."""
    run = Path(run_dir) if run_dir else None
    if run is None or not (run / ckpt.CONFIG).is_file():
        raise FileNotFoundError(
            f"--{field} must name a trained {' or '.join(recipes)} run directory (got {str(run_dir)!r}); "
            f"train one with `deepzoo train {recipes[0]}`"
        )
    recipe, _ = read_run_config(run)
    if recipe.name not in recipes:
        raise ValueError(f"--{field} {run} is a {recipe.name!r} run, not a {' or '.join(recipes)} run")
    weights = [
        run / name for name in (ckpt.BEST_WEIGHTS, ckpt.EMA_WEIGHTS, ckpt.WEIGHTS) if (run / name).exists()
    ]
    key = (str(run.resolve()), str(device), max((w.stat().st_mtime for w in weights), default=0.0))
    if key not in _parents:
        _parents.clear()
        _parents[key] = load_run(run, device)
    return _parents[key]
