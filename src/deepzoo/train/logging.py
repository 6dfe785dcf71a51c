"""metrics.jsonl: one JSON record per line, appended as training goes."""

from __future__ import annotations

import json
from pathlib import Path

from deepzoo.files import write_bytes


class MetricsLog:
    """Records {"step", "split", "time", ...terms} in `path`; keeps them in memory for plots."""

    def __init__(self, path: Path, resume_step: int | None = None) -> None:
        self.path = path
        self.records = read_metrics(path) if path.exists() else []
        if resume_step is not None:
            # A resumed run repeats the steps after its checkpoint: drop their old records.
            self.records = [r for r in self.records if r["step"] <= resume_step]
            write_bytes(path, "".join(json.dumps(r) + "\n" for r in self.records).encode())

    def write(self, record: dict) -> None:
        self.records.append(record)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


def read_metrics(path: Path) -> list[dict]:
    """All complete records of a metrics.jsonl (a line cut short by a crash is skipped)."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
