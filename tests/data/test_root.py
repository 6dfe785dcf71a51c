"""The checksummed fetch every dataset goes through (data/root.py), with file:// mirrors."""

import gzip
from pathlib import Path

import pytest

from deepzoo.data.root import DatasetNotFoundError, fetch, md5

RAW = bytes(range(256)) * 40


def _mirror(tmp_path, name: str, payload: bytes) -> str:
    directory = tmp_path / name
    directory.mkdir()
    (directory / "blob.gz").write_bytes(payload)
    return directory.as_uri() + "/"


def _broken_mirrors(tmp_path) -> list[str]:
    """A truncated gzip (EOFError), bytes that are no gzip at all (OSError), a wrong checksum."""
    whole = gzip.compress(RAW)
    return [
        _mirror(tmp_path, "truncated", whole[: len(whole) // 2]),
        _mirror(tmp_path, "not-gzip", RAW),
        _mirror(tmp_path, "corrupted", gzip.compress(RAW[:-1] + b"\x00")),
    ]


def test_a_mirror_serving_a_broken_copy_is_passed_over_for_the_next_and_the_good_copy_is_kept(tmp_path):
    mirrors = [*_broken_mirrors(tmp_path), _mirror(tmp_path, "good", gzip.compress(RAW))]
    store = tmp_path / "root" / "set"
    assert fetch("blob", md5(RAW), store, mirrors) == RAW
    assert [p.name for p in store.iterdir()] == ["blob.gz"]  # stored compressed, as served
    assert gzip.decompress((store / "blob.gz").read_bytes()) == RAW
    assert fetch("blob", md5(RAW), store, [], download=False) == RAW  # read back from disk


def test_when_no_mirror_serves_it_the_error_names_each_mirror_and_what_went_wrong(tmp_path):
    mirrors = _broken_mirrors(tmp_path)
    store = tmp_path / "root" / "set"
    with pytest.raises(DatasetNotFoundError) as info:
        fetch("blob", md5(RAW), store, mirrors)
    message = str(info.value)
    for mirror in mirrors:
        assert f"{mirror}blob.gz: " in message
    assert f"!= {md5(RAW)}" in message and "DEEPZOO_DATA" in message
    assert not store.exists() or not any(store.iterdir())  # nothing broken is kept
    with pytest.raises(DatasetNotFoundError) as offline:
        fetch("blob", md5(RAW), store, mirrors, download=False)
    assert "no mirror" not in str(offline.value)  # offline, no mirror was asked


def test_a_download_cut_while_written_leaves_nothing_a_later_fetch_would_take_for_the_file(
    tmp_path, monkeypatch
):
    """The copy is written beside the target and renamed into place: a crash half-way through the
    write leaves no NAME.gz, so the next fetch downloads again instead of failing its checksum."""
    mirror = _mirror(tmp_path, "good", gzip.compress(RAW))
    store = tmp_path / "root" / "set"
    write_bytes = Path.write_bytes

    def cut(self, data):
        write_bytes(self, data[: len(data) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_bytes", cut)
    with pytest.raises(KeyboardInterrupt):
        fetch("blob", md5(RAW), store, [mirror])
    monkeypatch.undo()
    assert not (store / "blob.gz").exists()
    assert fetch("blob", md5(RAW), store, [mirror]) == RAW
    assert gzip.decompress((store / "blob.gz").read_bytes()) == RAW
