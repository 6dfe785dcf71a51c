"""A run directory has one writer and is never overwritten by accident.

`RunDirLock` holds an exclusive `flock` on RUN_DIR/.lock while a process trains there: a second
process (or a second trainer in the same one) gets a clear error instead of interleaving its
writes. `claim_new_run` refuses a directory that already holds a run unless asked to overwrite it,
and never deletes a directory that is not a run.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

LOCK = ".lock"
RUN_FILES = ("config.json", "metrics.jsonl", "model.safetensors", "state.pt")


class RunDirError(ValueError):
    """A run directory that cannot be used as asked (in use, or already holding a run)."""


class RunDirLock:
    """An exclusive lock on run_dir/.lock, taken at construction; `release()` or process exit
    frees it."""

    def __init__(self, run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / LOCK
        self._file = open(self.path, "a+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "another process"
            self._file.close()
            raise RunDirError(
                f"{run_dir} is in use: {holder} is training there; wait for it, or choose another --run-dir"
            ) from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"process {os.getpid()}")
        self._file.flush()

    def release(self) -> None:
        if not self._file.closed:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()


def holds_run(run_dir: Path) -> bool:
    return any((run_dir / name).exists() for name in RUN_FILES)


def claim_new_run(run_dir: Path, overwrite: bool) -> None:
    """Make run_dir ready for a new run (call it holding the lock): an empty or missing directory
    is fine; one holding a run is cleared only with `overwrite`; anything else is refused."""
    entries = [p for p in run_dir.iterdir() if p.name != LOCK] if run_dir.is_dir() else []
    if not entries:
        return
    if not holds_run(run_dir):
        raise RunDirError(f"{run_dir} is not empty and holds no deepzoo run; choose another --run-dir")
    if not overwrite:
        raise RunDirError(
            f"{run_dir} already holds a run: continue it with `deepzoo train --resume {run_dir}`, "
            "replace it with --overwrite, or choose another --run-dir"
        )
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
