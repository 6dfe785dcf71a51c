"""Checkpoints a crash cannot corrupt.

Every file is written whole to a hidden temporary beside it and flushed to disk, then renamed over
the old one (an atomic replace). A checkpoint is several files (weights, EMA weights, state), so
`save_checkpoint` first writes all temporaries, then renames them with the state last. A kill
during the writes leaves the old checkpoint intact; a kill between the renames leaves complete
temporaries that `recover_checkpoint` renames into place (it rolls the save forward). Each file
records its step, so a mixed checkpoint is detected instead of silently loaded.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save

WEIGHTS, EMA_WEIGHTS, STATE, CONFIG = "model.safetensors", "ema.safetensors", "state.pt", "config.json"
BEST_WEIGHTS = "best.safetensors"


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def _write_synced(path: Path, write: Callable[[io.BufferedWriter], Any]) -> None:
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def atomic_write(path: Path, write: Callable[[io.BufferedWriter], Any]) -> None:
    """Write `path` through `write(file)`; readers see the old file or the whole new one."""
    tmp = _tmp(path)
    try:
        _write_synced(tmp, write)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def write_json(path: Path, obj: Any) -> None:
    write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def _aliases(state: dict[str, torch.Tensor]) -> set[str]:
    """Names whose tensor shares storage with an earlier name (tied weights)."""
    seen, aliases = set(), set()
    for name, tensor in state.items():
        key = (tensor.data_ptr(), tuple(tensor.shape), tensor.dtype)
        if tensor.numel() and key in seen:
            aliases.add(name)
        seen.add(key)
    return aliases


def weights_bytes(module: torch.nn.Module, step: int) -> bytes:
    """Weights and buffers as safetensors, the step in the header's metadata; a tied tensor is
    stored once, under its first name."""
    state = module.state_dict()
    skip = _aliases(state)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items() if k not in skip}
    return save(tensors, metadata={"step": str(step)})


def state_bytes(state: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def load_weights(path: Path, module: torch.nn.Module) -> None:
    """Load a `weights_bytes` file; only tied aliases may be absent from it."""
    missing, unexpected = module.load_state_dict(load_file(path, device="cpu"), strict=False)
    untied = set(missing) - _aliases(module.state_dict())
    if untied or unexpected:
        raise RuntimeError(
            f"{path} does not match the model: missing {sorted(untied)}, unexpected {unexpected}"
        )


def load_state(path: Path) -> dict[str, Any]:
    """Optimizer, step and RNG states; loaded without unpickling code."""
    return torch.load(path, map_location="cpu", weights_only=True)


def file_step(path: Path) -> int:
    """The step a checkpoint file records (safetensors metadata, or the state's "step")."""
    if path.name.endswith(".safetensors") or path.name.endswith(".safetensors.tmp"):
        with safe_open(path, framework="pt") as f:
            return int((f.metadata() or {}).get("step", -1))
    return int(load_state(path)["step"])


def save_checkpoint(run_dir: Path, files: dict[str, bytes]) -> None:
    """Write checkpoint `files` ({name: bytes}) so that a kill at any point leaves a consistent
    checkpoint, possibly after `recover_checkpoint`. STATE, if present, is renamed last."""
    names = sorted(files, key=lambda name: name == STATE)
    for name in names:
        _write_synced(_tmp(run_dir / name), lambda f, data=files[name]: f.write(data))
    for name in names:
        os.replace(_tmp(run_dir / name), run_dir / name)


def recover_checkpoint(run_dir: Path) -> None:
    """Finish a save interrupted between its renames; drop temporaries of an unfinished one."""
    weights = run_dir / WEIGHTS
    leftover = [run_dir / name for name in (WEIGHTS, EMA_WEIGHTS, STATE) if _tmp(run_dir / name).exists()]
    if not leftover:
        return
    if weights.exists() and not _tmp(weights).exists():
        step = file_step(weights)
        for path in leftover:
            try:
                complete = file_step(_tmp(path)) == step
            except Exception:  # a temporary cut short by the crash: the old file stands
                complete = False
            if complete:
                os.replace(_tmp(path), path)
    for path in leftover:
        _tmp(path).unlink(missing_ok=True)
