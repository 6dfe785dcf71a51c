import shutil

import torch
from safetensors.torch import load_file

from tests.conftest import one_thread
from tests.torchrun import torchrun

ARGS = [
    "cnn-mnist",
    "--model.no-batchnorm",  # per-rank BatchNorm statistics would differ by design
    "--model.channels",
    "8",
    "16",
    "--train.steps",
    "12",
    "--train.batch-size",
    "64",
    "--train.precision",
    "fp32",
    "--train.optimizer",
    "sgd",  # Adam's normalisation would magnify summation-order rounding
    "--train.lr",
    "0.05",
    "--train.eval-every",
    "1000",
    "--train.checkpoint-every",
    "6",
    "--train.device",
    "cpu",
    "--train.no-progress",
]


def _run_on_two_ranks(run_dir, *extra):
    """`python -m deepzoo train` on two gloo ranks, under the suite's seed offset as this process."""
    argv = ["-m", "tests.seeded_deepzoo", "train", *ARGS, *extra, "--run-dir", str(run_dir)]
    done = torchrun(2, argv, before_retry=lambda: shutil.rmtree(run_dir, ignore_errors=True))
    summaries = [line for line in done.stdout.splitlines() if line.startswith('{"run_dir"')]
    assert len(summaries) == 1, done.stdout  # the main rank alone prints the summary
    return load_file(run_dir / "model.safetensors")


def _run_here(run_dir, *extra):
    """The single-process runs in this process: the same code, without a second interpreter's
    imports (seconds)."""
    from deepzoo.cli import main

    with one_thread():
        main(["train", *ARGS, *extra, "--run-dir", str(run_dir)])
    return load_file(run_dir / "model.safetensors")


def test_two_gloo_processes_equal_one_process_with_the_same_global_batch(tmp_path):
    single = _run_here(tmp_path / "one")
    double = _run_on_two_ranks(tmp_path / "two")
    assert single.keys() == double.keys()
    for name in single:
        torch.testing.assert_close(double[name], single[name], rtol=1e-5, atol=1e-6)
    state = torch.load(tmp_path / "two" / "state.pt", weights_only=True)
    assert len(state["rng"]) == 2  # each rank's RNG state is kept for an exact resume
    # The tolerance tells a right sharding from a wrong one: one rank's batch alone differs.
    half_batch = _run_here(tmp_path / "half", "--train.batch-size", "32")
    assert max((half_batch[k] - double[k]).abs().max().item() for k in double) > 1e-3


def test_a_device_that_is_unknown_or_absent_is_refused_by_name(monkeypatch):
    """Not torch's RuntimeError traceback: a one-line ValueError for the CLI; auto and cpu work."""
    import pytest

    from deepzoo.train.distributed import pick_device

    assert pick_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="'tpu' is not a device torch knows"):
        pick_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device("auto") == torch.device("cpu")
    for name in ("cuda", "mps"):
        with pytest.raises(ValueError, match=f"'{name}': this machine has no such device"):
            pick_device(name)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pick_device("auto") == torch.device("cuda")  # auto prefers a GPU
    assert pick_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match="'cuda:2': this machine has no such device"):
        pick_device("cuda:2")
