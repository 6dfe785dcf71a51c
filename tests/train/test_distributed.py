"""The process-group helpers: `setup` reads torchrun's environment (once), and the collectives
agree across two gloo ranks."""

import json

import torch

from deepzoo.train import distributed
from tests.torchrun import torchrun

RANK_SCRIPT = """
import json, sys, time
from deepzoo.train import distributed

info = distributed.setup("cpu")
try:
    result = {
        "rank": info.rank, "world_size": info.world_size, "enabled": info.enabled,
        "setup_again_is_the_same": distributed.setup("cpu") is info,
        "is_main_process": distributed.is_main_process(), "is_main": info.is_main,
        "broadcast": distributed.broadcast_object(f"from rank {info.rank}", info),
        "rank_1_flags": distributed.any_rank(info.rank == 1, info),
        "no_rank_flags": distributed.any_rank(False, info),
        "max": distributed.max_over_ranks(1.5 + info.rank + 2**-40, info),  # float64: float32 drops 2^-40
    }
    time.sleep(1.0 * info.rank)  # rank 1 comes late to the barrier: rank 0 waits there for it
    start = time.perf_counter()
    distributed.barrier(info)
    result["waited_at_barrier"] = time.perf_counter() - start
finally:
    distributed.teardown()
result["main_after_teardown"] = distributed.is_main_process()
with open(f"{sys.argv[1]}.{result['rank']}", "w") as f:
    json.dump(result, f)
"""


def test_two_gloo_ranks_agree_on_rank_zeros_object_any_flag_and_the_largest_value(tmp_path):
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    torchrun(2, [str(script), str(tmp_path / "out")])
    for rank in range(2):
        got = json.loads((tmp_path / f"out.{rank}").read_text())
        waited = got.pop("waited_at_barrier")
        assert waited > 0.5 or rank == 1  # rank 0 waited there for rank 1's second of sleep
        assert got == {
            "rank": rank, "world_size": 2, "enabled": True, "setup_again_is_the_same": True,
            "is_main_process": rank == 0, "is_main": rank == 0, "broadcast": "from rank 0",
            "rank_1_flags": True, "no_rank_flags": False, "max": 2.5 + 2**-40, "main_after_teardown": True,
        }  # fmt: skip


def test_setup_takes_the_global_rank_from_rank_and_the_device_from_local_rank(monkeypatch):
    """On the second of two nodes of two processes: RANK 3, LOCAL_RANK 1, WORLD_SIZE 4. The rank
    is the global one; the CPU joins gloo (the CUDA device would be cuda:LOCAL_RANK with nccl)."""
    joined = []
    monkeypatch.setattr(distributed, "_current", None)
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: bool(joined))
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda backend: joined.append(backend))
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    info = distributed.setup("cpu")
    assert (info.rank, info.world_size, info.device) == (3, 4, torch.device("cpu")) and joined == ["gloo"]
    assert distributed.setup("cpu") is info and joined == ["gloo"]  # joined once
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.setattr(distributed, "_current", None)
    joined.clear()
    assert distributed.setup("cpu") == distributed.DistInfo(0, 1, torch.device("cpu")) and not joined


def test_on_cuda_each_process_takes_the_gpu_of_its_local_rank_and_joins_nccl(monkeypatch):
    """The CUDA branch without a GPU: the device picked and the process group are stand-ins."""
    joined, devices = [], []
    monkeypatch.setattr(distributed, "_current", None)
    monkeypatch.setattr(distributed, "pick_device", lambda name: torch.device("cuda"))
    monkeypatch.setattr(distributed.torch.cuda, "set_device", devices.append)
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: bool(joined))
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda backend: joined.append(backend))
    for name, value in (("RANK", "3"), ("LOCAL_RANK", "1"), ("WORLD_SIZE", "4")):
        monkeypatch.setenv(name, value)
    info = distributed.setup("cuda")
    assert info == distributed.DistInfo(3, 4, torch.device("cuda", 1))
    assert devices == [torch.device("cuda", 1)] and joined == ["nccl"]


def test_a_group_left_without_teardown_is_not_remembered(monkeypatch):
    """setup reuses its DistInfo only while the process group it joined is up."""
    monkeypatch.setattr(distributed, "_current", distributed.DistInfo(3, 4, torch.device("cpu")))
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    for name in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.setup("cpu") == distributed.DistInfo(0, 1, torch.device("cpu"))


def test_teardown_waits_for_every_rank_before_destroying_the_group(monkeypatch):
    calls = []
    monkeypatch.setattr(distributed, "_current", distributed.DistInfo(1, 2, torch.device("cpu")))
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(distributed.dist, "barrier", lambda: calls.append("barrier"))
    monkeypatch.setattr(distributed.dist, "destroy_process_group", lambda: calls.append("destroy"))
    distributed.teardown()
    assert calls == ["barrier", "destroy"] and distributed._current is None
