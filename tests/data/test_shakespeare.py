import pytest
import torch

from deepzoo.data import DatasetNotFoundError
from deepzoo.data.shakespeare import VOCAB, decode, encode, load_shakespeare, read_shakespeare, windows
from tests.conftest import SHARED_DATA


def test_corpus_facts_and_vocabulary():
    text = read_shakespeare()
    assert len(text) == 1_115_394
    assert "".join(sorted(set(text))) == VOCAB and len(VOCAB) == 65
    assert decode(encode(text[:500])) == text[:500]


def test_splits_are_the_first_90_and_last_10_percent():
    train = load_shakespeare("train", block_size=100)
    val = load_shakespeare("val", block_size=100)
    n = 1_115_394
    assert train.tensors["tokens"].shape == ((int(0.9 * n) - 1) // 100, 101)
    text = read_shakespeare()
    assert decode(val.tensors["tokens"][0]) == text[int(0.9 * n) : int(0.9 * n) + 101]


def test_windows_overlap_by_their_stride():
    rows = windows(torch.arange(10), block_size=3, stride=2)
    assert rows.tolist() == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7], [6, 7, 8, 9]]
    assert windows(torch.arange(4), block_size=3, stride=5).tolist() == [[0, 1, 2, 3]]
    with pytest.raises(ValueError, match="cannot fill one window of 4"):
        windows(torch.arange(3), block_size=3, stride=1)  # a window is block_size + 1 tokens


def test_offline_missing_corpus_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="DEEPZOO_DATA"):
        read_shakespeare(root=tmp_path, mirrors=[(tmp_path / "none").as_uri() + "/"])


def test_download_from_a_mirror_is_verified_and_stored(tmp_path):
    mirror = (SHARED_DATA / "tinyshakespeare").as_uri() + "/"
    assert len(read_shakespeare(root=tmp_path, mirrors=[mirror])) == 1_115_394
    assert (tmp_path / "tinyshakespeare" / "input.txt").is_file()


def test_unknown_characters_are_rejected():
    with pytest.raises(ValueError, match="outside"):
        encode("héllo")


def test_overlapping_windows_are_a_view_not_a_copy():
    tokens = torch.arange(1000)
    rows = windows(tokens, block_size=99, stride=4)
    assert (
        rows.shape == (226, 100) and rows.untyped_storage().data_ptr() == tokens.untyped_storage().data_ptr()
    )
    torch.testing.assert_close(rows[[3, 200]], torch.stack([torch.arange(12, 112), torch.arange(800, 900)]))
