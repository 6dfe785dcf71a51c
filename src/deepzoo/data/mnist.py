"""MNIST (LeCun, Cortes, Burges) from its four IDX files, as whole-dataset tensors."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from deepzoo.data.root import ENV_VAR, DatasetNotFoundError, data_root, fetch
from deepzoo.data.tensors import TensorData

# MD5 of the decompressed files, as published with the dataset.
FILES = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
MEAN, STD = 0.1307, 0.3081  # train pixel statistics in [0, 1]


def parse_idx(raw: bytes) -> np.ndarray:
    """An IDX file (unsigned bytes): magic 0x0000_08_NDIM, NDIM big-endian int32 sizes, then data."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError("not an IDX file of unsigned bytes")
    ndim = raw[3]
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"IDX header promises {shape} but holds {data.size} values")
    return data.reshape(shape)


def read_mnist(
    split: str = "train",
    root: Path | None = None,
    download: bool = True,
    mirrors: Sequence[str] = MIRRORS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 28, 28) uint8 and labels (N,) int64 of `split` ("train": 60k, "test": 10k)."""
    if split not in SPLITS:
        raise ValueError(f"MNIST split must be one of {sorted(SPLITS)}, got {split!r}")
    directory = (root or data_root()) / "mnist"
    arrays, missing = [], []
    for name in SPLITS[split]:
        try:
            arrays.append(parse_idx(fetch(name, FILES[name], directory, mirrors, download)))
        except DatasetNotFoundError:
            missing.append(name)
    if missing:
        raise DatasetNotFoundError(
            f"MNIST files {', '.join(missing)} (raw or .gz) are missing from {directory}"
            + (" and could not be downloaded" if download else "")
            + f". Set {ENV_VAR} to a directory that holds mnist/<file>.gz."
        )
    images, labels = arrays
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"MNIST {split}: {images.shape[0]} images but {labels.shape[0]} labels")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def load_mnist(split: str = "train", device: torch.device | str = "cpu", **kw) -> TensorData:
    """MNIST as TensorData: `x` (N, 1, 28, 28) float32 in [0, 1] and `y` (N,) int64, on `device`."""
    images, labels = read_mnist(split, **kw)
    x = images.to(device=device, dtype=torch.float32).div_(255.0).unsqueeze(1)
    return TensorData({"x": x, "y": labels.to(device)})
