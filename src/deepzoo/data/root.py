"""The data root and the checksummed file fetch that every dataset uses."""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

ENV_VAR = "DEEPZOO_DATA"


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are neither on disk nor downloadable."""


class ChecksumError(ValueError):
    """A dataset file is truncated or corrupted: its MD5 is not the published one."""


def data_root() -> Path:
    """`$DEEPZOO_DATA`, else `$XDG_CACHE_HOME/deepzoo`, else `~/.cache/deepzoo`."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser().resolve()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "deepzoo"


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def read_verified(path: Path, expected_md5: str) -> bytes:
    """The decompressed bytes of `path` (gzip when it ends in .gz), checked against `expected_md5`.
    The last few files read are kept in memory while their size and modification time stay the
    same: a process that loads a dataset again (an evaluation, a second stage, a notebook) skips
    the decompression and the checksum (MNIST's training images: 0.3 s)."""
    stat = path.stat()
    return _read_verified(str(path.resolve()), stat.st_size, stat.st_mtime_ns, expected_md5)


@lru_cache(maxsize=8)
def _read_verified(name: str, size: int, mtime_ns: int, expected_md5: str) -> bytes:
    path = Path(name)
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise ChecksumError(f"{path} is not a complete gzip file ({err})") from err
    digest = md5(raw)
    if digest != expected_md5:
        raise ChecksumError(
            f"{path}: MD5 of the decompressed bytes is {digest}, expected {expected_md5} "
            "(the file is truncated or corrupted; delete it and provide a fresh copy)"
        )
    return raw


def fetch(
    name: str,
    expected_md5: str,
    directory: Path,
    mirrors: Sequence[str],
    download: bool = True,
    timeout: float = 10.0,
    gzipped: bool = True,
) -> bytes:
    """Verified bytes of file `name` from `directory` (as NAME or NAME.gz), downloading from the
    first mirror that serves a copy with the right checksum when neither is there: MIRROR/NAME.gz
    (stored as NAME.gz), or MIRROR/NAME when the mirrors serve it uncompressed (`gzipped=False`)."""
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.exists():
            return read_verified(candidate, expected_md5)
    errors = []
    if download:
        for mirror in mirrors:
            url = f"{mirror}{name}.gz" if gzipped else f"{mirror}{name}"
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    payload = response.read()
                raw = gzip.decompress(payload) if gzipped else payload
                if md5(raw) != expected_md5:
                    raise ChecksumError(f"MD5 {md5(raw)} != {expected_md5}")
            except (urllib.error.URLError, OSError, EOFError, ChecksumError) as err:
                errors.append(f"{url}: {err}")
                continue
            directory.mkdir(parents=True, exist_ok=True)
            target = directory / (f"{name}.gz" if gzipped else name)
            tmp = target.with_name(target.name + ".part")
            tmp.write_bytes(payload)
            os.replace(tmp, target)
            return raw
    raise DatasetNotFoundError(
        f"{name} (or {name}.gz) not found in {directory}"
        + (f" and no mirror could serve it ({'; '.join(errors)})" if errors else "")
        + f". Put the file there, or set {ENV_VAR} to a directory holding {directory.name}/{name}.gz."
    )


def cache_root() -> Path:
    """Where deepzoo keeps what it generates (synthetic sets): `$DEEPZOO_CACHE`, else
    `$XDG_CACHE_HOME/deepzoo`, else `~/.cache/deepzoo`. Apart from the data root, which may be
    read-only (tests and CI point it at ../shared/data)."""
    if os.environ.get("DEEPZOO_CACHE"):
        return Path(os.environ["DEEPZOO_CACHE"]).expanduser().resolve()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "deepzoo"
