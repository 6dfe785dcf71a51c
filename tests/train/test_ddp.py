import os
import subprocess
import sys

import torch
from safetensors.torch import load_file

from tests.conftest import REPO

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


def _run(cmd, run_dir, *extra):
    env = os.environ | {
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [*cmd, *ARGS, *extra, "--run-dir", str(run_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return load_file(run_dir / "model.safetensors")


def test_two_gloo_processes_equal_one_process_with_the_same_global_batch(tmp_path):
    single = _run([sys.executable, "-m", "deepzoo", "train"], tmp_path / "one")
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "deepzoo",
        "train",
    ]
    double = _run(torchrun, tmp_path / "two")
    assert single.keys() == double.keys()
    for name in single:
        torch.testing.assert_close(double[name], single[name], rtol=1e-5, atol=1e-6)
    state = torch.load(tmp_path / "two" / "state.pt", weights_only=True)
    assert len(state["rng"]) == 2  # each rank's RNG state is kept for an exact resume
    # The tolerance tells a right sharding from a wrong one: one rank's batch alone differs.
    half_batch = _run(
        [sys.executable, "-m", "deepzoo", "train"], tmp_path / "half", "--train.batch-size", "32"
    )
    assert max((half_batch[k] - double[k]).abs().max().item() for k in double) > 1e-3
