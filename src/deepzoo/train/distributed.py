"""DistributedDataParallel set-up from torchrun's environment (gloo on CPU, nccl on CUDA)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """Whether a process group is up (under torchrun, even with one process)."""
        return dist.is_available() and dist.is_initialized()


def pick_device(name: str = "auto") -> torch.device:
    """`auto` is cuda > mps > cpu; anything else is passed to torch.device, and refused (ValueError)
    when torch does not know it or this machine has no such device (cuda, cuda:3, mps)."""
    if name != "auto":
        try:
            device = torch.device(name)
        except RuntimeError as error:
            raise ValueError(
                f"device {name!r} is not a device torch knows (auto, cpu, cuda, cuda:1, mps)"
            ) from error
        available = {
            "cuda": lambda: torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count(),
            "mps": lambda: torch.backends.mps.is_available(),
        }.get(device.type, lambda: True)
        if not available():
            raise ValueError(f"device {name!r}: this machine has no such device (auto picks one that exists)")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


_current: DistInfo | None = None


def setup(device: str = "auto") -> DistInfo:
    """Join the process group that torchrun describes in WORLD_SIZE/RANK/LOCAL_RANK, if any.

    The one owner of process-group set-up: the first call joins the group, later calls (from the
    CLI, the recipe runner, the trainer) return the same DistInfo. Outside torchrun it only picks
    the device."""
    global _current
    if _current is not None and dist.is_available() and dist.is_initialized():
        return _current
    chosen = pick_device(device)
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo(0, 1, chosen)
    world_size, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if chosen.type == "cuda":
        chosen = torch.device("cuda", local_rank)
        torch.cuda.set_device(chosen)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if chosen.type == "cuda" else "gloo")
    _current = DistInfo(rank, world_size, chosen)
    return _current


def is_main_process() -> bool:
    """Rank 0, or no process group at all (what may print and write)."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def teardown() -> None:
    """Leave the process group: every rank first waits for the others, so none destroys it while
    a peer's last collective may still be in flight (gloo's worker threads then abort the
    process: "terminate called without an active exception", seen once under heavy load)."""
    global _current
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    _current = None


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's `obj` on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True on every rank when `flag` is true on any (one all-reduce)."""
    return bool(max_over_ranks(float(flag), info))


def max_over_ranks(value: float, info: DistInfo) -> float:
    """The largest of the ranks' `value`, on every rank (one all-reduce, in float64)."""
    if not info.enabled:
        return value
    box = torch.tensor([value], dtype=torch.float64, device=info.device)
    dist.all_reduce(box, op=dist.ReduceOp.MAX)
    return float(box.item())
