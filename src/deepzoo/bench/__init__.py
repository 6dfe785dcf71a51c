"""Time-to-quality and speed benchmarks (`deepzoo bench`, `make bench`); never run in CI.

Each family's module registers its benchmarks with their table rows and verdicts (registry.py);
timing.py holds the shared helpers. A benchmark returns a JSON-ready dict with its measurements
and targets; its verdict, a function of that dict alone, adds whether it met them ("met"). Results
go to RESULTS/NAME.json and one markdown table, which README.md also shows between its
`<!-- results -->` markers. Times are medians of repeated runs, and speeds are
given as fractions of the machine's matmul peak measured in the same run, because the machine is
shared.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from deepzoo.bench.registry import BENCHMARKS, Benchmark, judged
from deepzoo.bench.timing import machine
from deepzoo.files import write_bytes, write_json

FAMILIES = (
    "classifiers",
    "language",
    "autoencoders",
    "diffusion",
    "gan",
    "likelihood",
    "contrastive",
    "rl",
    "detection",
    "online",
    "vqgan",
    "dance",
    "evaluation",
    "gpu",
)
"""Registration order is the table's row order."""
for _family in FAMILIES:
    importlib.import_module(f"deepzoo.bench.{_family}")

BENCHMARK_SUMMARIES = {name: benchmark.summary for name, benchmark in BENCHMARKS.items()}


def table(results: dict[str, dict]) -> str:
    """The markdown results table of every benchmark result, in registration order."""
    rows = ["| benchmark | measured (median of runs) | goal |", "| --- | --- | --- |"]
    for name, benchmark in BENCHMARKS.items():
        if name in results:
            rows += benchmark.rows(results[name])
    return "\n".join(rows) + "\n"


def run_benchmarks(names: list[str], results_dir: Path, quick: bool = False) -> None:
    """Run `names`, write results_dir/NAME.json, the table, and README.md's results section (only
    when results_dir is the repository's benchmarks/results)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        benchmark = BENCHMARKS[name]
        result = judged(benchmark, benchmark.run(quick, results_dir)) | {"machine": machine(), "quick": quick}
        write_json(results_dir / f"{name}.json", result)
        print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))
    print(write_tables(results_dir))


def write_tables(results_dir: Path) -> str:
    """The table of every result in results_dir, written to results_dir/README.md and, when
    results_dir is the repository's benchmarks/results, to README.md's results section."""
    results = {
        path.stem: json.loads(path.read_text())
        for path in sorted(results_dir.glob("*.json"))
        if path.stem in BENCHMARKS
    }
    markdown = table(results)
    write_bytes(results_dir / "README.md", ("# Benchmark results\n\n" + markdown).encode())
    readme = Path("README.md")
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    official = results_dir.resolve() == Path("benchmarks/results").resolve()
    if official and readme.exists() and start in readme.read_text():
        text = readme.read_text()
        head, rest = text.split(start, 1)
        tail = rest.split(end, 1)[1]
        write_bytes(readme, f"{head}{start}\n{markdown}{end}{tail}".encode())
    return markdown


__all__ = ["BENCHMARKS", "BENCHMARK_SUMMARIES", "Benchmark", "run_benchmarks", "table", "write_tables"]
