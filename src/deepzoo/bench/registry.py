"""The benchmark registry: each benchmark with its one-line summary, its measurement and the rows
it adds to the results table, registered by its family's module."""

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


BENCHMARKS: dict[str, Benchmark] = {}


def register(
    name: str, summary: str, run: Callable[[bool, Path], Result], rows: Callable[[Result], list[str]]
):
    if name in BENCHMARKS:
        raise ValueError(f"benchmark {name!r} is registered twice")
    BENCHMARKS[name] = Benchmark(name, summary, run, rows)


def seconds(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.1f} s"
