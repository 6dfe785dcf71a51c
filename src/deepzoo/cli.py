"""deepzoo list | train | search | check | eval | sample | report | bench.

Errors a user can cause (an unknown recipe, a bad flag or value, a directory that is not a run or
is damaged) end with one line on stderr and exit status 2; `--debug` (or DEEPZOO_DEBUG=1) shows
the traceback instead. A run that stops on a non-finite or diverging loss exits with 1, an
interrupted one (checkpoint saved) with 130.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import math
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any


class UsageError(Exception):
    """A mistake on the command line, reported in one line."""


def _flag_names(config: Any, prefix: str = "") -> set[str]:
    """Every `--section.field` flag of a nested config instance (bools also as `no-field`)."""
    names = set()
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        name = f"{prefix}{f.name}".replace("_", "-")
        if dataclasses.is_dataclass(value):
            names |= _flag_names(value, f"{prefix}{f.name}.")
            continue
        names.add(name)
        if isinstance(value, bool):
            names.add(re.sub(r"([^.]+)$", r"no-\1", name))
        if isinstance(value, dict):  # named sections, e.g. train.optim.d (a parameter group)
            for key, section in value.items():
                if dataclasses.is_dataclass(section):
                    names |= _flag_names(section, f"{prefix}{f.name}.{key}.")
    return names


def parse_overrides(recipe_name: str, default: Any, args: list[str]) -> Any:
    """The recipe's config with `--section.field value` overrides applied (parsed by tyro)."""
    import tyro

    from deepzoo.config import check_ranges

    prog = f"deepzoo train {recipe_name}"
    if "-h" in args or "--help" in args:
        try:
            tyro.cli(type(default), default=default, args=args, prog=prog)
        finally:
            print(TRAIN_RUN_OPTIONS)
    valid = _flag_names(default)
    for i, token in enumerate(args):
        if token.startswith("--"):
            name = token[2:].split("=", 1)[0].replace("_", "-")
            if name not in valid:
                raise UsageError(f"{prog}: unknown option --{name} (see `{prog} --help`)")
            switch = re.sub(r"(^|\.)no-([^.]+)$", r"\1\2", name)
            negated = re.sub(r"([^.]+)$", r"no-\1", switch)
            _, equals, value = token.partition("=")
            if not equals:
                value = args[i + 1] if i + 1 < len(args) else "--"
            if {switch, negated} <= valid and not value.startswith("--"):
                raise UsageError(
                    f"{prog}: --{switch} is a switch and takes no value: write --{switch} or "
                    f"--{negated}, not {token}{'' if equals else ' ' + value} (see `{prog} --help`)"
                )
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            config = tyro.cli(type(default), default=default, args=args, prog=prog)
    except SystemExit as exit_:
        raise UsageError(
            f"{prog}: {_tyro_reason(captured.getvalue(), args)} (see `{prog} --help`)"
        ) from exit_
    try:
        check_ranges(config)
    except ValueError as error:
        raise UsageError(f"{prog}: {error} (see `{prog} --help`)") from error
    return config


def _tyro_reason(text: str, args: list[str]) -> str:
    """tyro's error box as one line: its message (a value that does not parse, a choice not
    offered, too few values, an unexpected argument), wrapped lines joined; a config's own check
    ("Error parsing data.stream: primitives must be >= 2") names the flag (data.stream.primitives)."""
    lines = [line.strip() for line in re.sub(r"[│╭╮╰╯─]+", " ", text).splitlines()]
    start = next(
        (
            i
            for i, line in enumerate(lines)
            if any(
                k in line
                for k in ("parsing", "rror:", "nrecognized options:", "invalid choice", "Missing value")
            )
        ),
        None,
    )
    if start is None:
        return " ".join(args)
    message = []
    for line in lines[start:]:
        if not line or set(line) <= {"-"} or line.startswith("For full helptext"):
            break
        message.append(line)
    reason = " ".join(message)
    if match := re.fullmatch(r"Unrecognized options: (.*)", reason):  # a value no option takes
        reason = f"unexpected argument {match.group(1)} (each option takes one value)"
    if match := re.fullmatch(r"Error parsing ([\w.]+): ([\w.-]+) (must be .*)", reason):
        section, field, rest = match.groups()
        reason = f"{field if '.' in field else f'{section}.{field}'} {rest}"
    return reason


def cmd_list(_: argparse.Namespace) -> None:
    from deepzoo.recipes import RECIPES

    width = max(len(name) for name in RECIPES)
    for recipe in RECIPES.values():
        print(f"{recipe.name:<{width}}  {recipe.summary}")
        print(f"{'':<{width}}  metric: {recipe.metric}; reference: {recipe.reference}")


TRAIN_RUN_OPTIONS = """
run options:
  --run-dir DIR      where to write the run (default runs/RECIPE/TIME); an existing run is refused
  --overwrite        replace the run already in --run-dir
  deepzoo train --resume RUN_DIR    continue a run from its last checkpoint (Ctrl-C saves one)

The final line is JSON: the run directory, the step, the evaluation split and its metrics, and
the files written. The progress bar shows the training batches' terms."""


def cmd_train(ns: argparse.Namespace, overrides: list[str]) -> None:
    from deepzoo.recipes import get_recipe, resume_recipe, train_recipe
    from deepzoo.train import distributed

    if ns.resume:
        if ns.recipe or overrides or ns.overwrite:
            raise UsageError("deepzoo train --resume RUN_DIR takes no recipe, overrides or --overwrite")
        _require_run_dir(ns.resume)
        recipe, config = _recipe_of_run(ns.resume)
        result = resume_recipe(ns.resume)
    else:
        if not ns.recipe and {"-h", "--help"} & set(overrides):
            print(
                "usage: deepzoo train RECIPE [--section.field value ...] [--run-dir DIR] [--overwrite]\n"
                "       deepzoo train --resume RUN_DIR\n"
                "`deepzoo list` names the recipes; `deepzoo train RECIPE --help` their flags."
            )
            return
        if not ns.recipe:
            raise UsageError("deepzoo train: name a recipe (see `deepzoo list`) or --resume RUN_DIR")
        recipe = _recipe_or_error(ns.recipe, get_recipe)
        config = parse_overrides(recipe.name, recipe.default, overrides)
        result = train_recipe(recipe.name, config, ns.run_dir, overwrite=ns.overwrite)
    if distributed.is_main_process():
        summary = {"run_dir": str(result.run_dir), "step": result.step, "split": recipe.split(config)}
        print(json.dumps(summary | result.metrics | {"files": _files_of(result.run_dir)}))
    distributed.teardown()


def _files_of(run_dir: Path) -> list[str]:
    """What a run wrote, relative to its directory (the lock and temporaries left out)."""
    return sorted(
        str(path.relative_to(run_dir))
        for path in Path(run_dir).rglob("*")
        if path.is_file() and not path.name.startswith(".")
    )


def cmd_eval(ns: argparse.Namespace) -> None:
    from deepzoo.recipes import load_run
    from deepzoo.train import checkpoint as ckpt
    from deepzoo.train.distributed import pick_device
    from deepzoo.train.trainer import evaluation_mode, use_bf16

    for run_dir in ns.run_dir:
        _require_run_dir(run_dir)
    if ns.snapshots or len(ns.run_dir) > 1:
        return _eval_ensemble(ns)
    if ns.out:
        raise UsageError(
            "deepzoo eval: --out is for ensembles (two or more runs, or --snapshots); one run writes "
            "into itself"
        )
    (run_dir,) = ns.run_dir
    device = pick_device(ns.device)
    run = load_run(run_dir, device)
    _, eval_data = run.recipe.data(run.config, device)
    bf16 = use_bf16(run.config.train.precision, device)  # as the trainer evaluated it
    with evaluation_mode(run.model, device, bf16) as model:
        metrics = run.recipe.evaluate(model, eval_data, Path(run_dir), run.config)
    metrics = {"step": run.step, "split": run.recipe.split(run.config)} | metrics
    ckpt.write_json(Path(run_dir) / "eval.json", metrics)
    print(json.dumps(metrics))


def _members(ns: argparse.Namespace, device) -> list[tuple[str, str | None, Any]]:
    """(run directory, snapshot file or None, loaded model) of each member of an ensemble: the runs,
    or with --snapshots the snapshots each run saved at the end of its lr cycles."""
    from deepzoo.recipes import load_run
    from deepzoo.train import checkpoint as ckpt

    if not ns.snapshots:
        return [(run_dir, None, load_run(run_dir, device)) for run_dir in ns.run_dir]
    members = []
    for run_dir in ns.run_dir:
        files = sorted((Path(run_dir) / ckpt.SNAPSHOTS).glob("step-*.safetensors"))
        if not files:
            raise UsageError(
                f"deepzoo eval: {run_dir} saved no snapshots (train it with --train.snapshots and "
                "--train.lr-cycles M)"
            )
        members += [(run_dir, str(path), load_run(run_dir, device, path)) for path in files]
    if len(members) < 2:
        raise UsageError(f"deepzoo eval: {ns.run_dir[0]} saved one snapshot; an ensemble needs two or more")
    return members


def _eval_ensemble(ns: argparse.Namespace) -> None:
    """Classifier runs (or their snapshots) evaluated alone and as one `Ensemble` (their averaged
    probabilities) on the first run's evaluation split; eval.json and the ensemble's confusion
    matrix go to --out."""
    from deepzoo.models.ensemble import Ensemble
    from deepzoo.train import checkpoint as ckpt
    from deepzoo.train.distributed import pick_device
    from deepzoo.train.trainer import evaluation_mode, use_bf16

    if not ns.out:
        raise UsageError(
            "deepzoo eval: an ensemble of runs needs --out DIR for its eval.json and confusion matrix"
        )
    device = pick_device(ns.device)
    members = _members(ns, device)
    runs = [run for _, _, run in members]
    first = runs[0]
    split = first.recipe.split(first.config)
    for run_dir, _, run in members:
        if run.recipe.metric != "accuracy" or run.recipe.split(run.config) != split:
            raise UsageError(
                f"deepzoo eval: {run_dir} ({run.recipe.name}) is not a classifier evaluated on the "
                f"{split} split; an ensemble averages classifiers' probabilities"
            )
        if run.recipe.evaluated_on(run.config) != first.recipe.evaluated_on(first.config):
            raise UsageError(
                f"deepzoo eval: {run_dir} and {ns.run_dir[0]} hold out other training images or keep other "
                "digits (--validation, --classes): an ensemble's members must share one evaluation split"
            )
    _, eval_data = first.recipe.data(first.config, device)
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    bf16 = [use_bf16(run.config.train.precision, device) for run in runs]  # as each was evaluated
    with evaluation_mode(Ensemble([run.model for run in runs]), device, all(bf16)) as ensemble:
        metrics = first.recipe.evaluate(ensemble, eval_data, out, first.config)
    alone = []
    for (run_dir, snapshot, run), half in zip(members, bf16):
        with tempfile.TemporaryDirectory() as scratch, evaluation_mode(run.model, device, half) as model:
            alone.append(
                {"run_dir": str(run_dir), "recipe": run.recipe.name, "step": run.step}
                | ({"snapshot": snapshot} if snapshot else {})
                | run.recipe.evaluate(model, eval_data, Path(scratch), run.config)
            )
    metrics = {"split": split} | metrics | {"members": alone}
    ckpt.write_json(out / "eval.json", metrics)
    print(json.dumps(metrics))


def cmd_sample(ns: argparse.Namespace) -> None:
    import torch

    from deepzoo.recipes import load_run, write_samples
    from deepzoo.train.distributed import pick_device

    _require_run_dir(ns.run_dir)
    if ns.n < 1:
        raise UsageError(f"deepzoo sample: --n must be >= 1, got {ns.n}")
    device = pick_device(ns.device)
    run = load_run(ns.run_dir, device)
    if run.recipe.samples is None:
        raise UsageError(f"recipe {run.recipe.name!r} trains a model that does not sample")
    out = Path(ns.out) if ns.out else Path(ns.run_dir) / "samples" / f"sample-seed{ns.seed}.png"
    if run.recipe.samples == "predictions":
        from deepzoo.recipes import write_predictions

        _, eval_data = run.recipe.data(run.config, device)
        chosen = torch.randperm(len(eval_data), generator=torch.Generator().manual_seed(ns.seed))[: ns.n]
        with torch.no_grad():
            print(write_predictions(run.recipe.draw(run.model, eval_data[chosen.to(device)]), out))
        return
    if run.recipe.samples == "dance":
        for written in _sample_dances(run, ns, out, device):
            print(written)
        return
    if ns.wav:
        raise UsageError(f"--wav is for dance runs; {run.recipe.name!r} does not dance")
    generator = torch.Generator(device).manual_seed(ns.seed)
    with torch.no_grad():
        samples = run.model.sample(ns.n, generator=generator)
    written = write_samples(run.recipe.samples, run.model, samples, out, n_frames=ns.n)
    if run.recipe.samples == "text":
        print(written.read_text(), end="")
    print(written)


def _sample_dances(run, ns: argparse.Namespace, out: Path, device) -> list[Path]:
    """A dance for the music of --wav, or for N random songs of the evaluation split (their beats
    marked): out.npy (AIST++'s 75 values per frame, 60 FPS) and out.gif (stick figures)."""
    import torch

    from deepzoo.recipes import write_dances

    generator = torch.Generator(device).manual_seed(ns.seed)
    if ns.wav:
        from deepzoo.data.music import cached_music_features

        if not Path(ns.wav).is_file():
            raise UsageError(f"--wav {ns.wav}: no such file")
        music = torch.from_numpy(cached_music_features(ns.wav)).float()[None].to(device)
        beats = None
    else:
        _, eval_data = run.recipe.data(run.config, device)
        chosen = torch.randperm(len(eval_data), generator=torch.Generator().manual_seed(ns.seed))[: ns.n]
        batch = eval_data[chosen.to(device)]
        music, beats = batch["music"], batch["beats"]
    dancer = getattr(run.model, "policy", run.model)  # an actor-critic run dances with its policy
    with torch.no_grad():
        motion = dancer.generate(music, generator)
    return write_dances(motion, None if beats is None else beats[:, : motion.shape[1]], out)


def cmd_search(ns: argparse.Namespace, overrides: list[str]) -> None:
    """Random search: draw every trial's values, check each trial's config before training any,
    train the trials (resuming a search already in --out), print the ranking and plot it."""
    from deepzoo.recipes import get_recipe
    from deepzoo.recipes.search import draw_trials, parse_dimension, run_search
    from deepzoo.viz import plot_search

    if not ns.space:
        raise UsageError("deepzoo search: give the space, e.g. --space train.lr=log:1e-4:1e-1")
    if ns.trials < 1:
        raise UsageError(f"deepzoo search: --trials must be >= 1, got {ns.trials}")
    recipe = _recipe_or_error(ns.recipe, get_recipe)
    try:
        dimensions = [parse_dimension(spec) for spec in ns.space]
    except ValueError as err:
        raise UsageError(f"deepzoo search: {err}") from err
    flags = [d.flag for d in dimensions]
    fixed = {token[2:].split("=", 1)[0].replace("_", "-") for token in overrides if token.startswith("--")}
    if clash := sorted((set(flags) & fixed) | {f for f in flags if flags.count(f) > 1}):
        raise UsageError(f"deepzoo search: --{clash[0]} is searched twice, or searched and also fixed")
    values = draw_trials(dimensions, ns.trials, ns.seed)
    trials = [
        (
            v,
            parse_overrides(
                recipe.name, recipe.default, overrides + [a for f in flags for a in (f"--{f}", v[f])]
            ),
        )
        for v in values
    ]
    header = {
        "recipe": recipe.name,
        "seed": ns.seed,
        "space": [str(d) for d in dimensions],
        "overrides": [a for a in overrides if a not in ("--train.progress", "--train.no-progress")],
    }
    out = Path(ns.out)
    ranked = run_search(recipe, trials, out, header)
    key = recipe.metric_key
    plot_search(ranked, {d.flag: d.kind for d in dimensions}, key, out / "search.png")
    print(f"{'trial':<6}{key:>12}  " + "  ".join(f"{f:>14}" for f in flags))
    for trial in ranked:
        score = "stopped" if trial[key] is None else f"{trial[key]:.4f}"
        shown = [
            v if d.kind == "choice" else f"{float(v):.4g}"
            for d, v in zip(dimensions, trial["values"].values())
        ]
        print(f"{trial['trial']:<6}{score:>12}  " + "  ".join(f"{v:>14}" for v in shown))
    best = "every trial stopped" if ranked[0][key] is None else f"best: {ranked[0]['run_dir']}"
    print(f"{best}; all trials in {out / 'search.json'}, plotted in {out / 'search.png'}")


def cmd_check(ns: argparse.Namespace, overrides: list[str]) -> None:
    """The course's checks before a long run; prints them, then one JSON line of everything."""
    from deepzoo.recipes import get_recipe
    from deepzoo.recipes.check import check

    if ns.examples < 1 or ns.steps < 1 or ns.lr_steps < 1:
        raise UsageError("deepzoo check: --examples, --steps and --lr-steps must be >= 1")
    if not ns.lrs or any(not (rate > 0 and math.isfinite(rate)) for rate in ns.lrs):
        raise UsageError(f"deepzoo check: --lrs must be positive rates, got {ns.lrs}")
    recipe = _recipe_or_error(ns.recipe, get_recipe)
    config = parse_overrides(recipe.name, recipe.default, overrides)
    report = check(recipe, config, ns.examples, ns.steps, ns.lrs, ns.lr_steps)
    first, memorized, rates = report["initial_loss"], report["overfit"], report["learning_rates"]
    verdict = {True: "ok", False: "CHECK", None: ""}
    chance = "" if first["chance"] is None else f" (chance: {first['chance']:.4f}) {verdict[first['ok']]}"
    print(f"1. loss at initialization: {first['loss']:.4f}{chance}")
    accuracy = f", training accuracy {memorized['accuracy']:.2%}" if "accuracy" in memorized else ""
    print(
        f"2. {memorized['examples']} examples, {memorized['steps']} steps, no weight decay: loss "
        f"{memorized['loss']:.4g}{accuracy} {verdict[memorized.get('ok')]}"
    )
    print(f"3. {rates['steps']} steps at a constant rate, loss over the first / last tenth:")
    for rate, row in rates["rates"].items():
        shown = row["status"] if row["last"] is None else f"{row['first']:.4g} -> {row['last']:.4g}"
        print(f"   lr {rate:>8}: {shown}")
    print(f"   lowest last loss: lr {rates['suggested']}")
    print(json.dumps(report))


def cmd_report(ns: argparse.Namespace) -> None:
    from deepzoo.report import write_report

    if ns.bench is not None and not Path(ns.bench).is_dir():
        raise UsageError(f"--bench {ns.bench}: no such results directory")
    try:
        print(write_report(ns.runs, ns.out, ns.bench))
    except FileNotFoundError as error:
        raise UsageError(str(error)) from None


def cmd_bench(ns: argparse.Namespace) -> None:
    from deepzoo.bench import BENCHMARKS, run_benchmarks

    unknown = [name for name in ns.names if name not in BENCHMARKS]
    if unknown:
        raise UsageError(f"unknown benchmark {unknown[0]!r}; known: {', '.join(BENCHMARKS)}")
    run_benchmarks(ns.names or list(BENCHMARKS), Path(ns.results), quick=ns.quick)


def _recipe_or_error(name: str, get_recipe):
    try:
        return get_recipe(name)
    except KeyError as err:
        raise UsageError(err.args[0]) from err


def _recipe_of_run(run_dir: str):
    from deepzoo.recipes import read_run_config

    return read_run_config(run_dir)


def _require_run_dir(path: str) -> None:
    if not (Path(path) / "config.json").is_file():
        raise UsageError(f"{path} is not a deepzoo run directory (it has no config.json)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepzoo", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks (also DEEPZOO_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="recipes with their metric and reference numbers")
    train = sub.add_parser(
        "train",
        help="train a recipe: deepzoo train RECIPE [--train.lr 0.1 --model.FIELD ...]",
        add_help=False,
    )
    train.add_argument("recipe", nargs="?")
    train.add_argument("--run-dir", help="where to write the run (default runs/RECIPE/TIME)")
    train.add_argument("--overwrite", action="store_true", help="replace the run already in --run-dir")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its checkpoint")
    search = sub.add_parser(
        "search",
        help="random search of a recipe's hyperparameters, ranked on its validation split: deepzoo "
        "search RECIPE --space train.lr=log:1e-4:1e-1 --trials 10 --out DIR [--section.field value ...]",
        description="Random search (Bergstra & Bengio, 2012): each trial trains RECIPE with one value "
        "drawn per --space field, the other flags (`deepzoo train RECIPE --help`) fixed for every "
        "trial; trials are ranked by the recipe's metric on its validation split (classifiers: "
        "--validation N holds out the last N training images), never the test set.",
    )
    search.add_argument("recipe")
    search.add_argument(
        "--space",
        action="append",
        default=[],
        help="FIELD=log:LOW:HIGH | uniform:LOW:HIGH | int:LOW:HIGH | choice:A,B,... (repeat per field)",
    )
    search.add_argument("--trials", type=int, default=10, help="how many trials (default 10)")
    search.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")
    search.add_argument("--out", required=True, help="the search directory (run again to resume or extend)")
    checks = sub.add_parser(
        "check",
        help="the checks before a long run: loss at initialization, overfitting a few examples, "
        "which learning rates make the loss fall: deepzoo check RECIPE [--section.field value ...]",
        description="The course's first steps with a new model: (1) the loss at initialization against "
        "the chance loss (log K; the SVM's K - 1); (2) overfit --examples training examples with "
        "weight decay off (a classifier must reach 100%% training accuracy); (3) train --lr-steps "
        "steps at each of --lrs and compare how far the loss falls. Other flags set the recipe's "
        "config (`deepzoo train RECIPE --help`); turn off other regularization with them for (2).",
    )
    checks.add_argument("recipe")
    checks.add_argument("--examples", type=int, default=20, help="examples to overfit (default 20)")
    checks.add_argument(
        "--steps", type=int, default=200, help="full-batch steps to overfit them (default 200)"
    )
    checks.add_argument(
        "--lrs",
        type=float,
        nargs="+",
        default=[1e-1, 1e-2, 1e-3, 1e-4],
        help="rates to try (default 1e-1 ... 1e-4)",
    )
    checks.add_argument("--lr-steps", type=int, default=100, help="steps per rate (default 100)")
    evaluate = sub.add_parser("eval", help="evaluate a trained run on its evaluation split")
    evaluate.add_argument(
        "run_dir",
        nargs="+",
        help="a run directory written by `deepzoo train`; several classifier runs: their ensemble",
    )
    evaluate.add_argument("--out", help="where an ensemble's eval.json and confusion matrix go")
    evaluate.add_argument(
        "--snapshots",
        action="store_true",
        help="ensemble the snapshots the runs saved at the end of their lr cycles (--train.snapshots)",
    )
    evaluate.add_argument("--device", default="auto", help="auto (cuda > mps > cpu) or a torch device")
    sample = sub.add_parser(
        "sample",
        help="draw samples from a trained generative run, or a detector's / segmenter's predictions "
        "on N random scenes of its evaluation split",
    )
    sample.add_argument("run_dir", help="a run directory written by `deepzoo train`")
    sample.add_argument("--n", type=int, default=64, help="how many samples (default 64)")
    sample.add_argument("--seed", type=int, default=0, help="seed of the sampling generator (default 0)")
    sample.add_argument(
        "--out", help="file to write (default RUN_DIR/samples/sample-seedSEED.png, or .txt for text)"
    )
    sample.add_argument("--device", default="auto", help="auto (cuda > mps > cpu) or a torch device")
    sample.add_argument(
        "--wav", help="dance runs: dance to this audio file (else to N songs of the evaluation split)"
    )
    report = sub.add_parser(
        "report", help="one self-contained HTML page of runs (metrics, curves, samples) and benchmark results"
    )
    report.add_argument("runs", nargs="*", help="run directories, or directories holding runs")
    report.add_argument("--bench", help="a benchmark results directory to include (e.g. benchmarks/results)")
    report.add_argument(
        "-o", "--out", default="report.html", help="the HTML file to write (default report.html)"
    )
    from deepzoo.bench import BENCHMARK_SUMMARIES

    bench = sub.add_parser(
        "bench",
        help="time-to-quality and speed benchmarks -> benchmarks/results",
        description="Runs benchmarks and writes benchmarks/results/*.json, plots and the README table.",
        epilog="benchmarks:\n"
        + "\n".join(f"  {name:<18} {summary}" for name, summary in BENCHMARK_SUMMARIES.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    bench.add_argument("--results", default="benchmarks/results", help="where results are written")
    bench.add_argument("--quick", action="store_true", help="one short repeat (a smoke test)")
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("DEEPZOO_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    try:
        _main(argv, debug)
    except BrokenPipeError:  # `deepzoo ... | head` closed the pipe: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise SystemExit(0) from None


def _main(argv: list[str], debug: bool) -> None:
    from deepzoo.train.checkpoint import DamagedRunFile
    from deepzoo.train.errors import TrainingInterrupted, TrainingStopped

    parser = build_parser()
    try:
        ns, rest = _parse(parser, argv)
        if ns.command == "train":
            cmd_train(ns, rest)
        elif ns.command == "search":
            cmd_search(ns, rest)
        elif ns.command == "check":
            cmd_check(ns, rest)
        elif rest:
            raise UsageError(f"deepzoo {ns.command}: unrecognized arguments: {' '.join(rest)}")
        else:
            {
                "list": cmd_list,
                "eval": cmd_eval,
                "sample": cmd_sample,
                "bench": cmd_bench,
                "report": cmd_report,
            }[ns.command](ns)
    except UsageError as err:
        _fail(f"error: {err}", 2, debug)
    except (FileNotFoundError, ValueError, DamagedRunFile) as err:
        _fail(f"error: {err}", 2, debug, hint=True)
    except TrainingInterrupted as err:
        _fail(str(err), 130, debug)
    except TrainingStopped as err:
        _fail(str(err), 1, debug)
    except KeyboardInterrupt:
        _fail("interrupted", 130, debug)


def _fail(message: str, status: int, debug: bool, hint: bool = False) -> None:
    """One line on stderr and the exit status; with --debug the traceback instead."""
    if debug:
        raise
    suffix = " (--debug shows the traceback)" if hint else ""
    print(f"deepzoo: {message}{suffix}", file=sys.stderr)
    raise SystemExit(status) from None


def _parse(parser: argparse.ArgumentParser, argv: list[str]):
    """argparse for the command; the train command's unknown flags are left for tyro."""
    messages = io.StringIO()
    try:
        with contextlib.redirect_stderr(messages):
            return parser.parse_known_args(argv)
    except SystemExit as exit_:
        if exit_.code == 0:
            raise
        lines = [line for line in messages.getvalue().splitlines() if "error:" in line]
        raise UsageError(lines[-1].split("error:", 1)[1].strip() if lines else "bad arguments") from None
