"""The benchmark registry: each benchmark with its one-line summary, its measurement, the rows it
adds to the results table and, where it has a goal, the verdict on a result, registered by its
family's module."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Result = dict[str, Any]


@dataclass(frozen=True)
class Benchmark:
    name: str
    summary: str
    run: Callable[[bool, Path], Result]
    """(quick, results directory for plots) -> a JSON-ready result."""
    rows: Callable[[Result], list[str]]
    """The markdown table rows of a result."""
    met: Callable[[Result], bool] | None = None
    """Whether a result's measurements meet the goal (None: no goal, numbers to read). Computed
    from the result alone, so that a stored result can be judged again."""


BENCHMARKS: dict[str, Benchmark] = {}


def register(
    name: str,
    summary: str,
    run: Callable[[bool, Path], Result],
    rows: Callable[[Result], list[str]],
    met: Callable[[Result], bool] | None = None,
) -> None:
    if name in BENCHMARKS:
        raise ValueError(f"benchmark {name!r} is registered twice")
    BENCHMARKS[name] = Benchmark(name, summary, run, rows, met)


def judged(benchmark: Benchmark, result: Result) -> Result:
    """The result with its verdict under "met" (left as it is when the benchmark has no goal)."""
    return result if benchmark.met is None else result | {"met": benchmark.met(result)}


def seconds(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.1f} s"
