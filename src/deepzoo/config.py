"""Frozen config dataclasses to and from JSON-ready dicts, so a run's config rebuilds exactly."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Annotated, Any, TypeVar

T = TypeVar("T")


def to_dict(config: Any) -> dict[str, Any]:
    """A nested dataclass as plain dicts and lists."""
    return dataclasses.asdict(config)


_ABSENT = "deepzoo_absent"


def added_later(default: Any, absent: Any) -> Any:
    """A field added after configs were saved without it: `default` in new configs, `absent` (what
    the runs saved before it existed did) when `from_dict` reads a saved config that lacks it, so an
    old run rebuilds the model it trained. A field whose default keeps the old behaviour needs none."""
    return dataclasses.field(default=default, metadata={_ABSENT: absent})


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild dataclass `cls` from `to_dict` output; unknown keys are an error, a missing one takes
    its `added_later` value if it has one, else its default."""
    if not isinstance(data, dict):
        raise TypeError(f"expected a dict for {cls.__name__}, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    unknown = set(data) - {f.name for f in fields}
    if unknown:
        raise ValueError(f"unknown fields for {cls.__name__}: {sorted(unknown)}")
    older = {f.name: f.metadata[_ABSENT] for f in fields if _ABSENT in f.metadata and f.name not in data}
    return cls(**older, **{k: _convert(hints[k], v) for k, v in data.items()})


def _convert(hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value)  # which refuses a section that is not a dict
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            if arg is type(None) and value is None:
                return None
            if dataclasses.is_dataclass(arg) and isinstance(value, dict):
                return from_dict(arg, value)
        return tuple(value) if isinstance(value, list) else value
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    if origin is dict and isinstance(value, dict):  # e.g. train.optim: {group: OptimConfig}
        key_hint, value_hint = typing.get_args(hint) or (Any, Any)
        return {k: _convert(value_hint, v) for k, v in value.items()}
    return value


@dataclasses.dataclass(frozen=True)
class Range:
    """The values a numeric config field may take (each element, for a tuple field), read from its
    annotation (`width: Count = 64`) by `check_ranges`: finite, low <= v (low < v when `low_open`)
    and v <= high (v < high when `high_open`); None: unbounded."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def admits(self, value: float) -> bool:
        if not math.isfinite(value):  # nan passes every comparison's negation
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return (
            f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        )


def ranged(kind: Any, bound: Range) -> Any:
    """`kind` annotated with `bound` for `check_ranges`, and with the bound shown after the
    default in `--help` (tyro's hint: "(default: 64; >= 1)")."""
    import tyro

    each = "each " if typing.get_origin(kind) is tuple else ""
    hint = tyro.conf.arg(help_behavior_hint=lambda default: f"(default: {default}; {each}{bound})")
    return Annotated[kind, bound, hint]


Count = ranged(int, Range(1))
"""A size or a number of things: >= 1."""
Sizes = ranged(tuple[int, ...], Range(1))
"""Sizes of layers or stages, each >= 1."""
Index = ranged(int, Range(0))
"""A count where 0 has a meaning (none, off, all), or an index: >= 0."""
NonNegative = ranged(float, Range(0))
"""A loss weight, coefficient or threshold: >= 0."""
Positive = ranged(float, Range(0, low_open=True))
"""A scale, temperature or standard deviation: > 0."""
Probability = ranged(float, Range(0, 1))
"""A probability, share or IoU threshold: in [0, 1]."""
Rate = ranged(float, Range(0, 1, high_open=True))
"""A dropout rate or an EMA decay: in [0, 1)."""
Seed = ranged(int, Range(0))
"""A random seed: >= 0 (numpy and gymnasium refuse negative ones)."""


def check_ranges(config: Any, prefix: str = "") -> None:
    """Raise ValueError naming the first field (as its flag, e.g. model.width) whose value lies
    outside the `Range` of its annotation; nested configs (and dicts of them) are checked too."""
    hints = typing.get_type_hints(type(config), include_extras=True)
    for field in dataclasses.fields(config):
        value, name = getattr(config, field.name), prefix + field.name
        if dataclasses.is_dataclass(value):
            check_ranges(value, name + ".")
            continue
        if isinstance(value, dict):
            for key, item in value.items():
                if dataclasses.is_dataclass(item):
                    check_ranges(item, f"{name}.{key}.")
            continue
        for bound in _bounds(hints[field.name]):
            values = value if isinstance(value, tuple) else (value,)
            if any(v is not None and not bound.admits(v) for v in values):
                each = "each " if isinstance(value, tuple) else ""
                finite = "" if all(v is None or math.isfinite(v) for v in values) else "a finite number "
                flag = name.replace("_", "-")
                raise ValueError(f"{flag} must be {each}{finite}{bound}, got {value!r}")


def _bounds(hint: Any) -> list[Range]:
    """The Ranges of an annotation, also inside an Optional (`Positive | None`)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return [bound for arg in typing.get_args(hint) for bound in _bounds(arg)]
    return [m for m in getattr(hint, "__metadata__", ()) if isinstance(m, Range)]
