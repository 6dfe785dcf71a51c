import gzip

import pytest
import torch

from deepzoo.data import DatasetNotFoundError, load_mnist
from deepzoo.data.mnist import parse_idx, read_mnist
from deepzoo.data.root import ChecksumError, cache_root, data_root
from tests.conftest import SHARED_DATA

MNIST_DIR = SHARED_DATA / "mnist"


def test_data_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DEEPZOO_DATA", str(tmp_path))
    assert data_root() == tmp_path.resolve()
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DEEPZOO_DATA", "~/data")  # as a shell leaves it when quoted
    assert data_root() == (tmp_path / "data").resolve()
    monkeypatch.delenv("DEEPZOO_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data_root() == tmp_path / "cache" / "deepzoo"
    monkeypatch.setenv("DEEPZOO_CACHE", "~/generated")  # the cache root reads "~" alike
    assert cache_root() == (tmp_path / "generated").resolve()


def test_mnist_counts_labels_and_pixel_statistics():
    images, labels = read_mnist("train")
    assert images.shape == (60000, 28, 28) and images.dtype == torch.uint8
    assert labels.tolist()[:10] == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    x = images.float() / 255
    assert x.mean().item() == pytest.approx(0.1307, abs=5e-5)
    assert x.std().item() == pytest.approx(0.3081, abs=5e-5)
    test_images, test_labels = read_mnist("test")
    assert test_images.shape == (10000, 28, 28)
    assert test_labels.tolist()[:10] == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert torch.bincount(test_labels).sum() == 10000


def test_load_mnist_gives_float_images_in_unit_range(mnist_test):
    x, y = mnist_test.tensors["x"], mnist_test.tensors["y"]
    assert x.shape == (10000, 1, 28, 28) and x.dtype == torch.float32
    assert x.min() == 0.0 and x.max() == 1.0
    assert y.dtype == torch.int64


def _copy_split(tmp_path, split_files, transform=None):
    directory = tmp_path / "mnist"
    directory.mkdir(parents=True)
    for name in split_files:
        raw = gzip.decompress((MNIST_DIR / f"{name}.gz").read_bytes())
        (directory / name).write_bytes(transform(raw) if transform else raw)
    return tmp_path


TEST_FILES = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def test_uncompressed_files_are_read_too(tmp_path):
    root = _copy_split(tmp_path, TEST_FILES)
    images, labels = read_mnist("test", root=root, download=False)
    reference_images, reference_labels = read_mnist("test")
    assert torch.equal(images, reference_images) and torch.equal(labels, reference_labels)


def test_corrupted_copy_fails_its_checksum(tmp_path):
    def flip_one_pixel(raw: bytes) -> bytes:
        data = bytearray(raw)
        data[5000] ^= 0xFF
        return bytes(data)

    root = _copy_split(tmp_path, TEST_FILES, flip_one_pixel)
    with pytest.raises(ChecksumError, match="MD5"):
        read_mnist("test", root=root, download=False)


def test_a_file_read_again_is_remembered_until_it_changes(tmp_path, monkeypatch):
    """The second read neither decompresses nor digests; the tensors handed out are the caller's
    own; a file rewritten in place (same size, another modification time) is verified again."""
    import os

    from deepzoo.data import root as data_root_module

    root = _copy_split(tmp_path, TEST_FILES)
    digests = []
    real_md5 = data_root_module.md5
    monkeypatch.setattr(data_root_module, "md5", lambda raw: digests.append(1) or real_md5(raw))
    images, labels = read_mnist("test", root=root, download=False)
    assert len(digests) == 2
    images[0] = 255 - images[0]
    labels[0] = 3
    again, again_labels = read_mnist("test", root=root, download=False)
    assert len(digests) == 2
    reference_images, reference_labels = read_mnist("test")
    assert torch.equal(again, reference_images) and torch.equal(again_labels, reference_labels)

    path = root / "mnist" / TEST_FILES[0]
    data = bytearray(path.read_bytes())
    data[5000] ^= 0xFF
    stat = path.stat()
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    with pytest.raises(ChecksumError, match="MD5"):
        read_mnist("test", root=root, download=False)


def test_truncated_gzip_is_an_error_not_a_partial_dataset(tmp_path):
    directory = tmp_path / "mnist"
    directory.mkdir()
    for name in TEST_FILES:
        data = (MNIST_DIR / f"{name}.gz").read_bytes()
        (directory / f"{name}.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ChecksumError):
        read_mnist("test", root=tmp_path, download=False)


def test_missing_files_offline_raise_one_clear_error(tmp_path):
    unreachable = [(tmp_path / "no-mirror").as_uri() + "/"]
    with pytest.raises(DatasetNotFoundError) as info:
        read_mnist("test", root=tmp_path, mirrors=unreachable)
    message = str(info.value)
    assert "t10k-images-idx3-ubyte" in message and "t10k-labels-idx1-ubyte" in message
    assert str(tmp_path / "mnist") in message and "DEEPZOO_DATA" in message


def test_download_fetches_verifies_and_stores_the_files(tmp_path):
    mirror = MNIST_DIR.as_uri() + "/"
    images, labels = read_mnist("test", root=tmp_path, mirrors=[mirror])
    assert images.shape == (10000, 28, 28)
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == sorted(
        f"{name}.gz" for name in TEST_FILES
    )


def test_download_rejects_a_mirror_serving_corrupted_files(tmp_path):
    bad_mirror = tmp_path / "bad"
    bad_mirror.mkdir()
    for name in TEST_FILES:
        raw = bytearray(gzip.decompress((MNIST_DIR / f"{name}.gz").read_bytes()))
        raw[-1] ^= 0x01
        (bad_mirror / f"{name}.gz").write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DatasetNotFoundError, match="could not be downloaded"):
        read_mnist("test", root=tmp_path / "root", mirrors=[bad_mirror.as_uri() + "/"])
    assert not (tmp_path / "root" / "mnist").exists() or not any((tmp_path / "root" / "mnist").iterdir())


def test_idx_header_must_match_the_data():
    raw = gzip.decompress((MNIST_DIR / "t10k-labels-idx1-ubyte.gz").read_bytes())
    assert parse_idx(raw).shape == (10000,)
    with pytest.raises(ValueError, match="promises"):
        parse_idx(raw[:-10])
    with pytest.raises(ValueError, match="promises"):
        parse_idx(raw + b"\x00" * 10)  # trailing bytes: not the file the header describes
    with pytest.raises(ValueError, match="not an IDX"):
        parse_idx(b"\x00\x00\x0d\x01" + raw[4:])


def test_unknown_split_is_rejected():
    with pytest.raises(ValueError, match="split"):
        load_mnist("validation")


def test_the_binarized_test_split_is_one_fixed_bernoulli_draw_of_the_grey_levels():
    """Each pixel is 1 with probability its grey level (not a threshold at 0.5), drawn once:
    the same draw every time. 20,000 pixels at 0.3: the share of ones is within 5 standard
    errors (0.016) of 0.3."""
    from deepzoo.data.tensors import TensorData
    from deepzoo.recipes.common import binarize_once

    grey = TensorData({"x": torch.full((20, 1, 1000), 0.3), "y": torch.arange(20)})
    first, again = binarize_once(grey), binarize_once(grey)
    assert torch.equal(first.tensors["x"], again.tensors["x"]) and torch.equal(
        first.tensors["y"], grey.tensors["y"]
    )
    assert set(first.tensors["x"].unique().tolist()) == {0.0, 1.0}
    assert first.tensors["x"].mean().item() == pytest.approx(0.3, abs=0.016)


def test_likelihood_recipes_train_on_grey_levels_and_test_on_the_one_binarization(monkeypatch):
    """Training keeps grey levels (a model binarizes each batch afresh: a fixed draw would be
    memorized); only the test split is binarized, once."""
    from deepzoo.data.tensors import TensorData
    from deepzoo.recipes import common

    grey = {
        split: TensorData({"x": torch.full((4, 1, 8, 8), 0.3), "y": torch.arange(4)})
        for split in ("train", "test")
    }
    monkeypatch.setattr(common, "load_mnist", lambda split, device: grey[split])
    train, test = common.binarized_mnist_splits(None, torch.device("cpu"))
    assert train is grey["train"]
    assert torch.equal(test.tensors["x"], common.binarize_once(grey["test"]).tensors["x"])


def test_images_and_labels_of_different_counts_are_refused(tmp_path, monkeypatch):
    """IDX files that pass their checksums but disagree on the number of examples."""
    from deepzoo.data import mnist
    from deepzoo.data.root import md5

    images = b"\x00\x00\x08\x03" + (3).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + bytes(3 * 784)
    labels = b"\x00\x00\x08\x01" + (2).to_bytes(4, "big") + bytes([1, 2])
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "t10k-images-idx3-ubyte").write_bytes(images)
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte").write_bytes(labels)
    files = dict(
        mnist.FILES, **{"t10k-images-idx3-ubyte": md5(images), "t10k-labels-idx1-ubyte": md5(labels)}
    )
    monkeypatch.setattr(mnist, "FILES", files)
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        read_mnist("test", root=tmp_path, download=False)
