"""Atomic writes (deepzoo/files.py)."""

import subprocess
import sys

import pytest

from deepzoo.files import atomic_write, write_bytes, write_cache

WRITER = """
import sys

import pytest
from pathlib import Path
from deepzoo.files import write_bytes, write_cache
for _ in range(300):
    write_bytes(Path(sys.argv[1]), bytes([int(sys.argv[2])]) * 100_000)
"""


def test_a_write_leaves_the_whole_new_file_and_no_temporary(tmp_path):
    path = tmp_path / "a.bin"
    write_bytes(path, b"old")
    write_bytes(path, b"new contents")
    assert path.read_bytes() == b"new contents"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_two_processes_writing_one_file_at_once_each_replace_it_whole(tmp_path):
    """With one temporary name for both, one process renames the other's half-written temporary
    and the other's rename then fails (FileNotFoundError): seen in 300 writes each."""
    path = tmp_path / "shared.bin"
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(byte)], stderr=subprocess.PIPE, text=True
        )
        for byte in (1, 2)
    ]
    errors = [writer.communicate()[1] for writer in writers]
    assert [writer.returncode for writer in writers] == [0, 0], errors
    data = path.read_bytes()
    assert len(data) == 100_000 and len(set(data)) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["shared.bin"]


def test_a_file_that_cannot_be_written_is_named_in_the_error(tmp_path):
    from deepzoo.files import write_bytes

    target = tmp_path / "missing-folder" / "report.html"
    with pytest.raises(FileNotFoundError, match=f"cannot write {target}: No such file or directory"):
        write_bytes(target, b"x")


def test_a_cache_file_is_kept_with_its_folder_and_an_unwritable_cache_is_skipped(tmp_path):
    write_cache(tmp_path / "cache" / "kind" / "key.npy", b"data")
    assert (tmp_path / "cache" / "kind" / "key.npy").read_bytes() == b"data"
    (tmp_path / "blocked").write_text("a file where the folder should be")
    write_cache(tmp_path / "blocked" / "key.npy", b"data")  # no error: the next reader recomputes
    assert (tmp_path / "blocked").read_text() == "a file where the folder should be"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "a.bin"
    write_bytes(path, b"old")

    def fail_halfway(f):
        f.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="cannot write .*a.bin: No space left on device"):
        atomic_write(path, fail_halfway)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["a.bin"]
