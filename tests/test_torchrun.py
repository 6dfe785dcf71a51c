"""The DDP tests' launcher launches again once a rank that gloo aborted at exit, and nothing else."""

import textwrap
import warnings

import pytest

from tests.torchrun import torchrun

# A rank that, while argv[1] counts at most argv[2] launches, aborts the way gloo's threads abort a
# finished process; with argv[2] == "raise" it fails with a Python exception instead.
RANK = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path

    tries = Path(sys.argv[1])
    tries.write_text(tries.read_text() + "x" if tries.exists() else "x")
    if sys.argv[2] == "raise":
        raise RuntimeError("a bug in the rank")
    if len(tries.read_text()) <= int(sys.argv[2]):
        sys.stderr.write("terminate called without an active exception\\n")
        sys.stderr.flush()
        os.abort()
    """
)


@pytest.mark.parametrize(
    "failing, launches, error", [("1", 2, None), ("2", 2, "terminate"), ("raise", 1, "a bug")]
)
def test_only_a_gloo_exit_abort_is_launched_again_and_only_once(tmp_path, failing, launches, error):
    script, tries, cleared = tmp_path / "rank.py", tmp_path / "tries", []
    script.write_text(RANK)
    with (
        warnings.catch_warnings(record=True) as caught,
        pytest.raises(AssertionError, match=error or "") as failed,
    ):
        warnings.simplefilter("always")
        torchrun(1, [str(script), str(tries), failing], before_retry=lambda: cleared.append(True))
        raise AssertionError("the launch passed")
    assert (str(failed.value) == "the launch passed") == (error is None)
    assert len(tries.read_text()) == launches
    assert len(cleared) == launches - 1
    assert sum("gloo aborted" in str(w.message) for w in caught) == launches - 1
