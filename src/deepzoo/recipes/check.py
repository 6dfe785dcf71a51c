"""The course's first steps before a long run (CS231n, "babysitting the learning process"):
1. the loss at initialization is the chance loss (softmax: log K; multiclass SVM: (K - 1) margin);
2. the network overfits a handful of training examples (training accuracy 100%), with weight
   decay off;
3. learning rates from a coarse set, each trained briefly on all the data: which make the loss fall.
Each runs the recipe's own model, data, loss and trainer; recipes whose training split is a
tensor dataset and whose model has a loss (not the GANs' two-player steps, not the rollouts)."""

from __future__ import annotations

import math
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from deepzoo.data.tensors import TensorData
from deepzoo.recipes.common import mean_terms
from deepzoo.recipes.registry import Recipe
from deepzoo.recipes.runs import train_variant_of
from deepzoo.train.errors import DivergedError, NonFiniteLossError
from deepzoo.train.logging import read_metrics

OVERFIT_ACCURACY = 1.0  # a network that cannot memorise a handful of examples has a bug
CHANCE_TOLERANCE = 0.1  # the initial loss within 10% of the chance loss


def chance_loss(recipe: Recipe, model: torch.nn.Module) -> float | None:
    """The data loss of a classifier whose K scores are all equal (the state its initialization
    should be near): log K for softmax cross-entropy, (K - 1) margin for the multiclass SVM loss;
    None for a model that is not a classifier."""
    config = getattr(model, "config", None)
    classes = getattr(config, "num_classes", None)
    if recipe.metric_key != "accuracy" or classes is None:
        return None
    if getattr(config, "loss", "softmax") == "svm":
        return (classes - 1) * config.margin
    return math.log(classes)


def _data_loss(terms: dict[str, float]) -> float:
    """The loss without its weight penalty when the model reports it apart (data_loss)."""
    return terms.get("data_loss", terms["loss"])


def _training_split(recipe: Recipe, config: Any) -> TensorData:
    from deepzoo.train.distributed import pick_device

    train, _ = recipe.data(config, pick_device(config.train.device))  # where the trainer puts it
    if not isinstance(train, TensorData):
        raise ValueError(
            f"deepzoo check needs a recipe trained on a tensor dataset; {recipe.name} is not one"
        )
    return train


def initial_loss(recipe: Recipe, config: Any) -> dict[str, Any]:
    """The mean loss terms of the freshly initialized model (training mode, no update) on the first
    train.batch-size training examples, and the chance loss to compare the data loss with."""
    torch.manual_seed(config.train.seed)
    model = recipe.build(config)
    if not hasattr(model, "loss") or not any(p.requires_grad for p in model.parameters()):
        raise ValueError(
            f"deepzoo check needs a model trained by gradient steps on one loss; {recipe.name} is not"
        )
    batch = TensorData(_training_split(recipe, config)[slice(0, config.train.batch_size)])
    device = next(iter(batch.tensors.values())).device
    with torch.no_grad():
        terms = mean_terms(model.to(device).train(), batch, config.train.batch_size)
    expected = chance_loss(recipe, model)
    report = {"loss": _data_loss(terms), "chance": expected}
    if expected is not None:
        report["ok"] = abs(report["loss"] - expected) <= CHANCE_TOLERANCE * expected
    return report


def overfit(recipe: Recipe, config: Any, examples: int, steps: int, out: Path) -> dict[str, Any]:
    """Train `steps` full-batch steps on the first `examples` training examples, weight decay off,
    and evaluate the model's loss terms on those same examples."""
    subset = TensorData(_training_split(recipe, config)[slice(0, examples)])
    if len(subset) < examples:
        raise ValueError(
            f"{recipe.name} has only {len(subset)} training examples, fewer than --examples {examples}"
        )
    train = replace(
        config.train, steps=steps, batch_size=examples, weight_decay=0.0,
        warmup_steps=min(config.train.warmup_steps, steps // 10), eval_every=steps, checkpoint_every=steps,
        keep_best="", patience=0, target="",
    )  # fmt: skip
    memorize = replace(
        recipe,
        data=lambda c, d: (subset, subset),
        evaluate=lambda m, data, d, c: mean_terms(m, data),
        prepare=None,
    )
    metrics = train_variant_of(memorize, replace(config, train=train), out).metrics
    report = {"examples": examples, "steps": steps, "loss": _data_loss(metrics)}
    if "accuracy" in metrics:
        report |= {"accuracy": metrics["accuracy"], "ok": metrics["accuracy"] >= OVERFIT_ACCURACY}
    return report


def learning_rates(recipe: Recipe, config: Any, rates: list[float], steps: int, out: Path) -> dict[str, Any]:
    """Each rate trained `steps` steps at a constant rate (no warm-up, no decay) on all the data
    from the same initialization: the mean loss of its first and last tenth of the steps. The
    suggested rate is the one whose last loss is lowest, of those that did not diverge."""
    window = max(1, steps // 10)
    train = replace(
        config.train, steps=steps, schedule="constant", warmup_steps=0, log_every=window, eval_every=steps,
        checkpoint_every=steps, keep_best="", patience=0, target="",
    )  # fmt: skip
    report: dict[str, Any] = {"steps": steps, "rates": {}}
    for rate in rates:
        run_dir = out / f"lr-{rate:g}"
        try:
            train_variant_of(recipe, replace(config, train=replace(train, lr=rate)), run_dir, evaluate=False)
            losses = [r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if r["split"] == "train"]
            report["rates"][f"{rate:g}"] = {"first": losses[0], "last": losses[-1], "status": "done"}
        except (DivergedError, NonFiniteLossError) as stopped:
            why = "diverged" if isinstance(stopped, DivergedError) else "non-finite loss"
            report["rates"][f"{rate:g}"] = {"first": None, "last": None, "status": f"stopped: {why}"}
    finished = {r: v["last"] for r, v in report["rates"].items() if v["status"] == "done"}
    report["suggested"] = min(finished, key=finished.get) if finished else None
    return report


def check(
    recipe: Recipe, config: Any, examples: int, steps: int, rates: list[float], lr_steps: int
) -> dict[str, Any]:
    """The three checks, in the course's order, in a scratch directory."""
    report = {"recipe": recipe.name, "initial_loss": initial_loss(recipe, config)}
    with tempfile.TemporaryDirectory() as scratch:
        report["overfit"] = overfit(recipe, config, examples, steps, Path(scratch) / "overfit")
        report["learning_rates"] = learning_rates(recipe, config, rates, lr_steps, Path(scratch))
    return report
