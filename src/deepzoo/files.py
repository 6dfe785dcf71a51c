"""Files a crash cannot corrupt: each is written whole to a hidden temporary beside it, flushed to
disk, then renamed over the old one (an atomic replace). Used by checkpoints, logs and pictures.
`atomic_write`'s temporary is named by the process, so that processes writing one file at once
(two runs building the same cached set) each replace it whole; the checkpoint's commit uses
`tmp_path`, a fixed name its recovery looks for (a run directory has one writer: its lock)."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def write_synced(path: Path, write: Callable[[io.BufferedWriter], Any]) -> None:
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def atomic_write(path: Path, write: Callable[[io.BufferedWriter], Any]) -> None:
    """Write `path` through `write(file)`; readers see the old file or the whole new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write_synced(tmp, write)
        os.replace(tmp, path)
    except OSError as error:  # name the file asked for, not the temporary
        raise OSError(error.errno, f"cannot write {path}: {error.strerror}") from error
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def write_cache(path: Path, data: bytes) -> None:
    """Keep a computed result at `path` (its folder made, written atomically). A cache that cannot
    be written (read-only, or a file where its folder should be) is skipped: that only costs the
    next reader the computation, so it is never an error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(path, data)
    except OSError:
        pass


def write_json(path: Path, obj: Any) -> None:
    write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())
