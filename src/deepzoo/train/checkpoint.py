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
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save

from deepzoo.files import atomic_write, tmp_path, write_bytes, write_json, write_synced

__all__ = ["atomic_write", "write_bytes", "write_json"]

WEIGHTS, EMA_WEIGHTS, STATE, CONFIG = "model.safetensors", "ema.safetensors", "state.pt", "config.json"
BEST_WEIGHTS = "best.safetensors"
SNAPSHOTS = "snapshots"  # snapshots/step-NNNNNN.safetensors: the weights at the end of each lr cycle


def snapshot_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / SNAPSHOTS / f"step-{step:06d}.safetensors"


class DamagedRunFile(ValueError):
    """A run file that cannot be read (cut short, corrupted, or not what its name says)."""


def damaged(path: Path, err: BaseException, what_to_do: str) -> DamagedRunFile:
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return DamagedRunFile(f"{path} is damaged ({reason[:200]}): {what_to_do}")


_REDO = "train the run again, or resume it from an intact copy of the run directory"


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
    try:
        tensors = load_file(path, device="cpu")
    except FileNotFoundError:
        raise
    except Exception as err:  # safetensors raises its own error types for a cut or corrupt file
        raise damaged(path, err, _REDO) from err
    state = module.state_dict()
    # From the names, not from load_state_dict's report: BatchNorm refills a missing
    # num_batches_tracked itself (a courtesy to checkpoints older than that buffer).
    missing = sorted(set(state) - _aliases(state) - set(tensors))
    unexpected = sorted(set(tensors) - set(state))
    reshaped = [
        f"{name} {tuple(tensors[name].shape)} for {tuple(state[name].shape)}"
        for name in sorted(set(tensors) & set(state))
        if tensors[name].shape != state[name].shape
    ]
    if missing or unexpected or reshaped:
        raise DamagedRunFile(
            f"{path} does not match the model: missing {missing}, unexpected {unexpected}"
            + (f", other shapes {reshaped}" if reshaped else "")
        )
    module.load_state_dict(tensors, strict=False)


def load_state(path: Path) -> dict[str, Any]:
    """Optimizer, step and RNG states; loaded without unpickling code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # a cut zip archive, or not a torch file at all
        raise damaged(
            path, err, "it cannot be resumed; its weights still load with `deepzoo eval`, or " + _REDO
        ) from err


def file_step(path: Path) -> int:
    """The step a checkpoint file records (safetensors metadata, or the state's "step")."""
    if path.name.endswith(".safetensors") or path.name.endswith(".safetensors.tmp"):
        try:
            with safe_open(path, framework="pt") as f:
                return int((f.metadata() or {}).get("step", -1))
        except FileNotFoundError:
            raise
        except Exception as err:
            raise damaged(path, err, _REDO) from err
    return int(load_state(path)["step"])


def save_checkpoint(run_dir: Path, files: dict[str, bytes]) -> None:
    """Write checkpoint `files` ({name: bytes}) so that a kill at any point leaves a consistent
    checkpoint, possibly after `recover_checkpoint`. STATE, if present, is renamed last."""
    names = sorted(files, key=lambda name: name == STATE)
    for name in names:
        write_synced(tmp_path(run_dir / name), lambda f, data=files[name]: f.write(data))
    for name in names:
        os.replace(tmp_path(run_dir / name), run_dir / name)


def recover_checkpoint(run_dir: Path) -> None:
    """Finish a save interrupted between its renames; drop temporaries of an unfinished one."""
    weights = run_dir / WEIGHTS
    leftover = [run_dir / name for name in (WEIGHTS, EMA_WEIGHTS, STATE) if tmp_path(run_dir / name).exists()]
    if not leftover:
        return
    if weights.exists() and not tmp_path(weights).exists():
        step = file_step(weights)
        for path in leftover:
            try:
                complete = file_step(tmp_path(path)) == step
            except Exception:  # a temporary cut short by the crash: the old file stands
                complete = False
            if complete:
                os.replace(tmp_path(path), path)
    for path in leftover:
        tmp_path(path).unlink(missing_ok=True)
