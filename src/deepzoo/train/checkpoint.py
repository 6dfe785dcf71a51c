"""Checkpoints a crash cannot corrupt: every file is written to a temporary name, flushed to disk,
then renamed over the old one (an atomic replace on POSIX and Windows)."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

WEIGHTS, EMA_WEIGHTS, STATE, CONFIG = "model.safetensors", "ema.safetensors", "state.pt", "config.json"


def atomic_write(path: Path, write: Callable[[io.BufferedWriter], None]) -> None:
    """Write `path` through `write(file)`; readers see the old file or the whole new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def write_json(path: Path, obj: Any) -> None:
    write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def save_weights(path: Path, module: torch.nn.Module, step: int) -> None:
    """Weights and buffers as safetensors; the step goes in the header's metadata."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    write_bytes(path, save(tensors, metadata={"step": str(step)}))


def load_weights(path: Path, module: torch.nn.Module) -> None:
    module.load_state_dict(load_file(path, device="cpu"))


def weights_step(path: Path) -> int:
    """The step recorded in a safetensors file's metadata."""
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        return int((f.metadata() or {}).get("step", -1))


def save_state(path: Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_bytes(path, buffer.getvalue())


def load_state(path: Path) -> dict[str, Any]:
    """Optimizer, schedule, step and RNG states; loaded without unpickling code."""
    return torch.load(path, map_location="cpu", weights_only=True)
