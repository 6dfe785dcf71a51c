"""deepzoo list | train | eval | sample | bench.

Errors a user can cause (an unknown recipe, a bad flag, a directory that is not a run) end with
one line on stderr and exit status 2; a run stopped by a non-finite loss exits with 1.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import re
import sys
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
        else:
            names.add(name)
            if isinstance(value, bool):
                names.add(re.sub(r"([^.]+)$", r"no-\1", name))
    return names


def parse_overrides(recipe_name: str, default: Any, args: list[str]) -> Any:
    """The recipe's config with `--section.field value` overrides applied (parsed by tyro)."""
    import tyro

    prog = f"deepzoo train {recipe_name}"
    if "-h" in args or "--help" in args:
        tyro.cli(type(default), default=default, args=args, prog=prog)
    valid = _flag_names(default)
    for token in args:
        if token.startswith("--"):
            name = token[2:].split("=", 1)[0].replace("_", "-")
            if name not in valid:
                raise UsageError(f"{prog}: unknown option --{name} (see `{prog} --help`)")
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            return tyro.cli(type(default), default=default, args=args, prog=prog)
    except SystemExit as exit_:
        text = re.sub(r"[│╭╮╰╯─]+", " ", captured.getvalue())
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        reason = next((line for line in lines if "parsing" in line or "rror:" in line), " ".join(args))
        raise UsageError(f"{prog}: {reason} (see `{prog} --help`)") from exit_


def cmd_list(_: argparse.Namespace) -> None:
    from deepzoo.recipes import RECIPES

    width = max(len(name) for name in RECIPES)
    for recipe in RECIPES.values():
        print(f"{recipe.name:<{width}}  {recipe.summary}")
        print(f"{'':<{width}}  metric: {recipe.metric}; reference: {recipe.reference}")


def cmd_train(ns: argparse.Namespace, overrides: list[str]) -> None:
    from deepzoo.recipes import get_recipe, resume_recipe, train_recipe
    from deepzoo.train import distributed

    if ns.resume:
        if ns.recipe or overrides:
            raise UsageError("deepzoo train --resume RUN_DIR takes no recipe or overrides")
        _require_run_dir(ns.resume)
        result = resume_recipe(ns.resume)
    else:
        if not ns.recipe and {"-h", "--help"} & set(overrides):
            print(
                "usage: deepzoo train RECIPE [--section.field value ...] [--run-dir DIR]\n"
                "       deepzoo train --resume RUN_DIR\n"
                "`deepzoo list` names the recipes; `deepzoo train RECIPE --help` their flags."
            )
            return
        if not ns.recipe:
            raise UsageError("deepzoo train: name a recipe (see `deepzoo list`) or --resume RUN_DIR")
        recipe = _recipe_or_error(ns.recipe, get_recipe)
        config = parse_overrides(recipe.name, recipe.default, overrides)
        result = train_recipe(recipe.name, config, ns.run_dir)
    if distributed.setup("cpu").is_main:
        print(json.dumps({"run_dir": str(result.run_dir), "step": result.step} | result.metrics))
    distributed.teardown()


def cmd_eval(ns: argparse.Namespace) -> None:
    import torch

    from deepzoo.recipes import load_run
    from deepzoo.train import checkpoint as ckpt
    from deepzoo.train.distributed import pick_device
    from deepzoo.train.trainer import use_bf16

    _require_run_dir(ns.run_dir)
    device = pick_device(ns.device)
    run = load_run(ns.run_dir, device)
    _, eval_data = run.recipe.data(run.config, device)
    bf16 = use_bf16(run.config.train.precision, device)  # as the trainer evaluated it
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        metrics = run.recipe.evaluate(run.model, eval_data, Path(ns.run_dir), run.config)
    metrics = {"step": run.step} | metrics
    ckpt.write_json(Path(ns.run_dir) / "eval.json", metrics)
    confusion = Path(ns.run_dir) / "confusion.json"
    if confusion.exists():
        from deepzoo.viz import plot_confusion

        plot_confusion(torch.tensor(json.loads(confusion.read_text())), confusion.with_suffix(".png"))
    print(json.dumps(metrics))


def cmd_sample(ns: argparse.Namespace) -> None:
    import torch

    from deepzoo.recipes import load_run
    from deepzoo.train.distributed import pick_device

    _require_run_dir(ns.run_dir)
    run = load_run(ns.run_dir, pick_device(ns.device))
    if not hasattr(run.model, "sample"):
        raise UsageError(f"recipe {run.recipe.name!r} trains a model that does not sample")
    generator = torch.Generator(pick_device(ns.device)).manual_seed(ns.seed)
    with torch.no_grad():
        samples = run.model.sample(ns.n, generator=generator)
    if isinstance(samples, list):  # text
        print("\n\n".join(samples))
        return
    out = Path(ns.out) if ns.out else Path(ns.run_dir) / "samples" / "sample.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    from deepzoo.viz import save_image_grid

    save_image_grid(samples, out)
    print(out)


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


def _require_run_dir(path: str) -> None:
    if not (Path(path) / "config.json").is_file():
        raise UsageError(f"{path} is not a deepzoo run directory (it has no config.json)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepzoo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="recipes with their metric and reference numbers")
    train = sub.add_parser(
        "train",
        help="train a recipe: deepzoo train RECIPE [--train.lr 0.1 --model.FIELD ...]",
        add_help=False,
    )
    train.add_argument("recipe", nargs="?")
    train.add_argument("--run-dir", help="where to write the run (default runs/RECIPE/TIME)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its checkpoint")
    evaluate = sub.add_parser("eval", help="evaluate a trained run on its test split")
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--device", default="auto")
    sample = sub.add_parser("sample", help="draw samples from a trained generative run")
    sample.add_argument("run_dir")
    sample.add_argument("--n", type=int, default=64)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--out", help="PNG path (default RUN_DIR/samples/sample.png)")
    sample.add_argument("--device", default="auto")
    bench = sub.add_parser("bench", help="time-to-quality benchmarks -> benchmarks/results")
    bench.add_argument("names", nargs="*")
    bench.add_argument("--results", default="benchmarks/results")
    bench.add_argument("--quick", action="store_true", help="one short repeat (a smoke test)")
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        ns, rest = _parse(parser, argv)
        if ns.command == "train":
            cmd_train(ns, rest)
        elif rest:
            raise UsageError(f"deepzoo {ns.command}: unrecognized arguments: {' '.join(rest)}")
        else:
            {"list": cmd_list, "eval": cmd_eval, "sample": cmd_sample, "bench": cmd_bench}[ns.command](ns)
    except UsageError as err:
        print(f"deepzoo: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except (FileNotFoundError, ValueError) as err:
        print(f"deepzoo: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("deepzoo: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as err:
        from deepzoo.train.trainer import NonFiniteLossError

        if isinstance(err, NonFiniteLossError):
            print(f"deepzoo: {err}", file=sys.stderr)
            raise SystemExit(1) from None
        raise


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
