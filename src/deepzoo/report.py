"""`deepzoo report`: one self-contained HTML page of runs and benchmark results.

For each run directory (one with a config.json; a directory holding runs is searched for them):
its recipe, configuration, the metrics of its evaluations (metrics.jsonl), its curves
(curves.png, or drawn from the records when missing), and what it made to look at (the images,
GIFs and texts under it, such as samples/). Runs of one recipe get a comparison table of their
last evaluations. With a benchmark results directory: its table (results/README.md) and plots.
Images are inlined as data URIs, so the page needs no other file and no network; a file that is
missing, unreadable or not what its name says is stated on the page instead of breaking it.
The page is plain HTML and CSS from a jinja2 template (templates/report.html.j2), no JavaScript.
"""

from __future__ import annotations

import base64
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IMAGE_TYPES = {".png": "image/png", ".gif": "image/gif", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
MAX_IMAGES = 12
"""Images shown per run, in path order."""
MAX_TEXT = 4000
"""Characters shown of each text sample."""


@dataclass
class Picture:
    name: str
    uri: str


@dataclass
class RunView:
    """What the page shows of one run."""

    path: str
    recipe: str = "?"
    config: str = ""
    last_eval: dict[str, Any] = field(default_factory=dict)
    eval_columns: list[str] = field(default_factory=list)
    eval_rows: list[dict[str, Any]] = field(default_factory=list)
    curves: Picture | None = None
    pictures: list[Picture] = field(default_factory=list)
    texts: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass
class BenchView:
    path: str
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    pictures: list[Picture] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def find_runs(paths: list[str | Path]) -> list[Path]:
    """The run directories named, or found (by their config.json) under the directories named."""
    runs: list[Path] = []
    for path in map(Path, paths):
        if (path / "config.json").is_file():
            runs.append(path)
        elif path.is_dir():
            runs.extend(sorted(p.parent for p in path.rglob("config.json")))
        else:
            raise FileNotFoundError(f"{path}: no such run directory")
    return runs


def picture(path: Path) -> Picture:
    """An image file as a data URI, after checking that it decodes (ValueError if not)."""
    from PIL import Image

    data = path.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    except Exception as error:  # PIL raises many types for a damaged file
        raise ValueError(f"{path.name} is not a readable image ({type(error).__name__})") from None
    return Picture(
        path.name, f"data:{IMAGE_TYPES[path.suffix.lower()]};base64,{base64.b64encode(data).decode()}"
    )


def _format(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    return f"{value:.4g}"


def _curves_from_records(records: list[dict]) -> Picture | None:
    import tempfile

    from deepzoo.viz import plot_curves

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "curves.png"
        plot_curves(records, path)
        return picture(path) if path.exists() else None


def read_run(run_dir: Path) -> RunView:
    """A RunView of run_dir; every problem with its files goes to `problems`, none raises."""
    view = RunView(str(run_dir))
    try:
        record = json.loads((run_dir / "config.json").read_text())
        view.recipe = str(record.get("recipe", "?"))
        view.config = json.dumps(record.get("config", record), indent=2)
    except (OSError, ValueError, AttributeError) as error:
        view.problems.append(f"config.json could not be read: {error}")
    records = _read_records(run_dir / "metrics.jsonl", view.problems)
    evals = [r for r in records if r.get("split") == "eval"]
    if evals:
        view.last_eval = {k: _format(v) for k, v in evals[-1].items() if k not in ("split",)}
        view.eval_columns = [k for k in evals[-1] if k != "split"]
        view.eval_rows = [{k: _format(r.get(k, "")) for k in view.eval_columns} for r in evals]
    elif records:
        view.problems.append("metrics.jsonl holds no evaluation yet")
    curves = run_dir / "curves.png"
    try:
        view.curves = picture(curves) if curves.exists() else _curves_from_records(records)
    except (OSError, ValueError) as error:
        view.problems.append(f"curves: {error}")
        view.curves = _curves_from_records(records) if records else None
    for path in sorted(
        p for p in run_dir.rglob("*") if p.suffix.lower() in IMAGE_TYPES and p.name != "curves.png"
    ):
        if len(view.pictures) == MAX_IMAGES:
            view.problems.append(f"more than {MAX_IMAGES} images: the rest are not shown")
            break
        try:
            view.pictures.append(picture(path))
            view.pictures[-1].name = str(path.relative_to(run_dir))
        except (OSError, ValueError) as error:
            view.problems.append(str(error))
    for path in sorted((run_dir / "samples").glob("*.txt")) if (run_dir / "samples").is_dir() else []:
        try:
            view.texts.append((str(path.relative_to(run_dir)), path.read_text(errors="replace")[:MAX_TEXT]))
        except OSError as error:
            view.problems.append(f"{path.name}: {error}")
    return view


def _read_records(path: Path, problems: list[str]) -> list[dict]:
    if not path.exists():
        problems.append("metrics.jsonl is missing: the run logged nothing")
        return []
    records, bad = [], 0
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(record, dict) and "step" in record:
            records.append(record)
        else:
            bad += 1
    if bad:
        problems.append(f"metrics.jsonl: {bad} line(s) could not be read and are left out")
    return records


def comparisons(runs: list[RunView]) -> dict[str, tuple[list[str], list[RunView]]]:
    """Recipe -> (the numeric metrics of the runs' last evaluations, the runs), for recipes with
    more than one run."""
    by_recipe: dict[str, list[RunView]] = {}
    for run in runs:
        by_recipe.setdefault(run.recipe, []).append(run)
    out = {}
    for recipe, group in by_recipe.items():
        if len(group) > 1:
            keys = [k for k in dict.fromkeys(k for r in group for k in r.last_eval) if k != "time"]
            out[recipe] = (keys, group)
    return out


def read_bench(results: Path) -> BenchView:
    """The table of results/README.md and the plots of a benchmark results directory."""
    view = BenchView(str(results))
    table = results / "README.md"
    if not table.is_file():
        view.problems.append(f"{table} is missing: no benchmark table")
    else:
        lines = [
            line.strip()
            for line in table.read_text(errors="replace").splitlines()
            if line.strip().startswith("|")
        ]
        cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
        cells = [row for row in cells if not all(set(c) <= set("-: ") for c in row)]
        if cells:
            view.header, view.rows = cells[0], cells[1:]
    for path in sorted(p for p in results.glob("*") if p.suffix.lower() in IMAGE_TYPES):
        try:
            view.pictures.append(picture(path))
        except (OSError, ValueError) as error:
            view.problems.append(str(error))
    return view


def render(runs: list[RunView], bench: BenchView | None) -> str:
    """The page's HTML."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("deepzoo", "templates"), autoescape=True, undefined=jinja2.StrictUndefined
    )
    return env.get_template("report.html.j2").render(runs=runs, comparisons=comparisons(runs), bench=bench)


def write_report(paths: list[str | Path], out: str | Path, bench: str | Path | None = None) -> Path:
    """Write the report of the runs under `paths` (and of the benchmark results `bench`) to out."""
    from deepzoo.files import write_bytes

    runs = [read_run(run) for run in find_runs(paths)]
    bench_view = read_bench(Path(bench)) if bench is not None else None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(out, render(runs, bench_view).encode())
    return out
