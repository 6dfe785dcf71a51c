"""Launch a command on gloo ranks with torchrun, as the DDP tests do, and fail with the ranks'
stderr.

One failure looks like PyTorch's, not ours: once in CI (the horizon test, 2 ranks on a loaded
2-core machine) a rank was aborted by std::terminate ("terminate called without an active
exception", exit -6) with no Python error, as gloo's threads do when torn down with work in
flight; 20 launches under load did not repeat it. Such a launch is retried once, with a warning
that carries the ranks' stderr; every other failure, and a second abort, fails the test. The ranks
run with PYTHONFAULTHANDLER=1, so the next abort prints each thread's Python stack: where it is."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from tests.conftest import REPO

LAUNCHER = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
GLOO_EXIT_ABORT = "terminate called without an active exception"


def is_gloo_exit_abort(stderr: str) -> bool:
    """A rank killed by SIGABRT from std::terminate, and no rank that exited with an error code
    (a Python exception exits 1; the peers torchrun then stops report -15)."""
    return (
        GLOO_EXIT_ABORT in stderr
        and "(exitcode: -6)" in stderr
        and not re.search(r"exitcode\s*:\s*[1-9]", stderr)
    )


def torchrun(
    nproc: int,
    args: Sequence[str],
    *,
    cwd: Path | None = None,
    before_retry: Callable[[], None] = lambda: None,
    timeout: float = 300,
) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node nproc ARGS` (ARGS: a script and its arguments, or
    `-m module ...`) with one-thread ranks that import this checkout's src and tests; asserts exit 0.
    `before_retry` clears what the aborted launch left (a run directory that now exists)."""
    env = os.environ | {
        "OMP_NUM_THREADS": "1",
        "PYTHONFAULTHANDLER": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    command = [*LAUNCHER, str(nproc), *args]
    for attempt in (1, 2):
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        if done.returncode == 0 or attempt == 2 or not is_gloo_exit_abort(done.stderr):
            break
        warnings.warn(
            f"gloo aborted a finished rank; launching again. Its stderr:\n{done.stderr[-6000:]}", stacklevel=2
        )
        before_retry()
    assert done.returncode == 0, done.stderr[-3000:]
    return done
