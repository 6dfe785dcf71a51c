"""tiny-shakespeare (Karpathy's char-rnn corpus) at the character level.

1,115,394 characters, 65 distinct; the first 90% is the training split and the last 10% the
validation split. A split becomes windows of block_size + 1 tokens (inputs and next-token targets).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from deepzoo.data.root import ENV_VAR, DatasetNotFoundError, data_root, fetch
from deepzoo.data.tensors import TensorData

FILE, MD5 = "input.txt", "6fb458f1232090904fb40fe944165e91"
MIRRORS = ("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/",)
VOCAB = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
"""The corpus' 65 characters, sorted: token i is VOCAB[i]."""


def read_shakespeare(
    root: Path | None = None, download: bool = True, mirrors: Sequence[str] = MIRRORS
) -> str:
    """The whole verified corpus as text."""
    directory = (root or data_root()) / "tinyshakespeare"
    try:
        raw = fetch(FILE, MD5, directory, mirrors, download, gzipped=False)
    except DatasetNotFoundError as err:
        raise DatasetNotFoundError(
            f"tiny-shakespeare ({FILE}) is missing from {directory}"
            + (" and could not be downloaded" if download else "")
            + f". Set {ENV_VAR} to a directory that holds tinyshakespeare/{FILE}."
        ) from err
    return raw.decode("utf-8")


def encode(text: str) -> torch.Tensor:
    """Characters -> token ids (N,) int64; a character outside VOCAB is an error."""
    index = {ch: i for i, ch in enumerate(VOCAB)}
    unknown = set(text) - index.keys()
    if unknown:
        raise ValueError(f"characters outside the tiny-shakespeare vocabulary: {sorted(unknown)}")
    return torch.tensor([index[ch] for ch in text], dtype=torch.long)


def decode(tokens: torch.Tensor | Sequence[int]) -> str:
    return "".join(VOCAB[int(t)] for t in tokens)


def split_tokens(split: str, root: Path | None = None) -> torch.Tensor:
    """Token ids of the train (first 90%) or val (last 10%) split."""
    tokens = encode(read_shakespeare(root))
    cut = int(0.9 * len(tokens))
    if split == "train":
        return tokens[:cut]
    if split == "val":
        return tokens[cut:]
    raise ValueError(f"tiny-shakespeare split must be 'train' or 'val', got {split!r}")


def windows(tokens: torch.Tensor, block_size: int, stride: int) -> torch.Tensor:
    """Rows tokens[s : s + block_size + 1] for s = 0, stride, 2 stride, ...: (W, block_size + 1),
    a view of `tokens` (overlapping windows share memory: block 1024 at stride 32 would otherwise
    copy the text 32 times over)."""
    if len(tokens) < block_size + 1:
        raise ValueError(f"{len(tokens)} tokens cannot fill one window of {block_size + 1}")
    return tokens.unfold(0, block_size + 1, stride)


def load_shakespeare(
    split: str, block_size: int, stride: int | None = None, device: torch.device | str = "cpu"
) -> TensorData:
    """TensorData {"tokens": (W, block_size + 1)}; stride defaults to block_size (no overlap)."""
    tokens = split_tokens(split)
    return TensorData({"tokens": windows(tokens, block_size, stride or block_size).to(device)})
