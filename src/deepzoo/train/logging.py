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


class TensorBoardLog:
    """TensorBoard event files in run_dir/tensorboard (`--train.tensorboard`): every numeric term
    of a metrics record as the scalar "SPLIT/TERM" at its step, and after each evaluation the
    PNG images under run_dir/samples as "samples/NAME". Needs the `tensorboard` package."""

    def __init__(self, run_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ImportError(
                "--train.tensorboard needs the tensorboard package: pip install 'deepzoo[tensorboard]'"
            ) from None
        self.run_dir = run_dir
        self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def write(self, record: dict) -> None:
        split, step = record.get("split", "train"), int(record["step"])
        for key, value in record.items():
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            if numeric and key not in ("step", "split"):
                self.writer.add_scalar(f"{split}/{key}", value, step)
        if split == "eval":
            self._images(step)
        self.writer.flush()

    def _images(self, step: int) -> None:
        import numpy as np
        from PIL import Image

        for path in sorted((self.run_dir / "samples").glob("*.png")):
            try:
                with Image.open(path) as image:
                    pixels = np.asarray(image.convert("RGB"))
            except OSError:
                continue  # a sample being rewritten or damaged: the next evaluation logs it
            self.writer.add_image(f"samples/{path.stem}", pixels, step, dataformats="HWC")

    def close(self) -> None:
        self.writer.close()
