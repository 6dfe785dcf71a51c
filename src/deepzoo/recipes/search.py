"""Random search of hyperparameters (Bergstra & Bengio, 2012): trial i trains a recipe with values
drawn from one distribution per searched field, and the trials are ranked by the recipe's headline
metric on its validation split. Random beats a grid of the same size when few fields matter: each
trial tries a new value of every field, where a grid repeats each value across the others.

A search directory holds search.json (the space, the seed and every finished trial, written after
each trial) and one run directory per trial; running the same search again skips the finished
trials, resumes an interrupted one from its checkpoint, and with more trials extends the search by
the same draws a longer search would have made."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepzoo.files import write_json
from deepzoo.recipes.registry import Recipe
from deepzoo.recipes.runs import resume_recipe, train_recipe
from deepzoo.train.checkpoint import CONFIG
from deepzoo.train.errors import DivergedError, NonFiniteLossError
from deepzoo.train.logging import read_metrics

KINDS = ("log", "uniform", "int", "choice")
RECORD = "search.json"


@dataclass(frozen=True)
class Dimension:
    """One searched field and its distribution:
    log a b: exp(U(log a, log b)), log-uniform (learning rates, weight decays: the scale matters);
    uniform a b: U(a, b); int a b: uniform on the integers a..b (both included);
    choice v1,v2,...: one of the values, each with the same probability."""

    flag: str
    """The field as its command-line flag without the dashes, e.g. train.lr."""
    kind: str
    low: float = 0.0
    high: float = 0.0
    choices: tuple[str, ...] = ()

    def draw(self, rng: random.Random) -> str:
        """One value, as the command line writes it (floats to full precision)."""
        if self.kind == "log":
            return repr(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        if self.kind == "uniform":
            return repr(rng.uniform(self.low, self.high))
        if self.kind == "int":
            return str(rng.randint(int(self.low), int(self.high)))
        return rng.choice(self.choices)

    def __str__(self) -> str:
        if self.kind == "choice":
            return f"{self.flag}=choice:{','.join(self.choices)}"
        bound = (lambda v: str(int(v))) if self.kind == "int" else repr
        return f"{self.flag}={self.kind}:{bound(self.low)}:{bound(self.high)}"


def parse_dimension(spec: str) -> Dimension:
    """'train.lr=log:1e-4:1e-1', 'train.weight-decay=uniform:0:0.1', 'model.regularize.translate=int:0:3'
    or 'train.optimizer=choice:sgd,adamw' as a Dimension; ValueError saying what is wrong."""
    flag, equals, distribution = spec.partition("=")
    kind, _, rest = distribution.partition(":")
    example = "e.g. train.lr=log:1e-4:1e-1"
    if not equals or not flag.strip() or kind not in KINDS or not rest:
        raise ValueError(
            f"search space {spec!r}: write FIELD=KIND:..., KIND one of {', '.join(KINDS)} ({example})"
        )
    flag = flag.strip().removeprefix("--").replace("_", "-")
    if kind == "choice":
        choices = tuple(v.strip() for v in rest.split(","))
        if "" in choices or len(set(choices)) != len(choices):
            raise ValueError(f"search space {spec!r}: choice needs distinct values, e.g. choice:sgd,adamw")
        return Dimension(flag, kind, choices=choices)
    bounds = rest.split(":")
    try:
        low, high = (float(b) for b in bounds) if len(bounds) == 2 else (math.nan, math.nan)
    except ValueError:
        low = high = math.nan
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"search space {spec!r}: {kind} needs two finite bounds LOW < HIGH ({example})")
    if kind == "log" and low <= 0:
        raise ValueError(f"search space {spec!r}: log-uniform bounds must be > 0")
    if kind == "int" and not (low.is_integer() and high.is_integer()):
        raise ValueError(f"search space {spec!r}: int bounds must be integers")
    return Dimension(flag, kind, low, high)


def draw_trials(dimensions: list[Dimension], trials: int, seed: int) -> list[dict[str, str]]:
    """The values of trials 0..trials-1: trial i's depend only on the seed, the dimensions and i
    (so a longer search begins with a shorter one's trials)."""
    rng = random.Random(seed)
    return [{d.flag: d.draw(rng) for d in dimensions} for _ in range(trials)]


def trial_metric(run_dir: Path, recipe: Recipe, config: Any) -> float:
    """A finished trial's score: its best evaluation of the headline metric when the run keeps
    its best weights by that metric (those are the weights it is loaded with), else its last."""
    key = recipe.metric_key
    values = [r[key] for r in read_metrics(run_dir / "metrics.jsonl") if r["split"] == "eval" and key in r]
    if not values:
        raise ValueError(f"trial {run_dir} finished without an evaluation of {key}")
    if config.train.keep_best.replace(" ", "") in (f"{key}:max", f"{key}:min"):
        return max(values) if config.train.keep_best.endswith("max") else min(values)
    return values[-1]


def run_search(
    recipe: Recipe, trials: list[tuple[dict[str, str], Any]], out: Path, header: dict[str, Any]
) -> list[dict[str, Any]]:
    """Train each (values, config) trial not yet finished into out/trial-NNN and record it in
    out/search.json under `header` (what defines the search: a directory holding a search under
    another header is refused). A trial that diverges or meets a non-finite loss is recorded as
    such (its metric None) and the search goes on. Returns the trials, best first."""
    if len({recipe.evaluated_on(config) for _, config in trials}) > 1:
        raise ValueError(
            "the trials would be ranked on different images: do not search validation or classes"
        )
    if any(recipe.split(config) == "test" for _, config in trials):
        fix = (
            "hold out training images with --validation N"
            if hasattr(trials[0][1], "validation")
            else "search recipes evaluated on a validation split"
        )
        raise ValueError(
            f"deepzoo search ranks trials by their evaluation, and {recipe.name} evaluates on the "
            f"test set: {fix} (choosing hyperparameters on the test set overstates the result)"
        )
    path = out / RECORD
    record = {**header, "trials": []}
    if path.exists():
        import json

        saved = json.loads(path.read_text())
        if {k: saved.get(k) for k in header} != header:
            differ = ", ".join(k for k in header if saved.get(k) != header[k])
            raise ValueError(
                f"{out} holds another search (a different {differ}); give this one its own --out"
            )
        record["trials"] = saved["trials"]  # a shorter rerun keeps, but does not rank, the later ones
    finished = {t["trial"] for t in record["trials"]}
    out.mkdir(parents=True, exist_ok=True)
    for index, (values, config) in enumerate(trials):
        if index in finished:
            continue
        run_dir = out / f"trial-{index:03d}"
        started = time.perf_counter()
        try:
            if (run_dir / CONFIG).is_file():
                resume_recipe(run_dir)
            else:
                train_recipe(recipe.name, config, run_dir)
            status, metric = "done", trial_metric(run_dir, recipe, config)
        except (DivergedError, NonFiniteLossError) as stopped:
            status, metric = f"stopped: {stopped}", None
        record["trials"].append(
            {"trial": index, "run_dir": str(run_dir), "values": values, recipe.metric_key: metric}
            | {"status": status, "seconds": round(time.perf_counter() - started, 2)}
        )
        record["trials"].sort(key=lambda t: t["trial"])
        write_json(path, record)
    return rank([t for t in record["trials"] if t["trial"] < len(trials)], recipe)


def rank(trials: list[dict[str, Any]], recipe: Recipe) -> list[dict[str, Any]]:
    """The trials best first by the recipe's headline metric; stopped trials last, by index."""
    key, sign = recipe.metric_key, (-1 if recipe.maximize else 1)

    def order(trial: dict[str, Any]) -> tuple:
        value = trial[key]
        return (value is None, 0.0 if value is None else sign * value, trial["trial"])

    return sorted(trials, key=order)
