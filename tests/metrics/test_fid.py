import numpy as np
import pytest
import scipy.linalg
import torch

from deepzoo.metrics.fid import feature_statistics, frechet_distance, label_entropy


def _reference_fid(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook computation with scipy's general matrix square root."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_frechet_distance_equals_the_scipy_computation():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 16)) @ rng.normal(size=(16, 16))
    b = rng.normal(loc=0.3, size=(400, 16)) @ rng.normal(size=(16, 16))
    ours = frechet_distance(
        *feature_statistics(torch.from_numpy(a)), *feature_statistics(torch.from_numpy(b))
    )
    assert ours == pytest.approx(_reference_fid(a, b), rel=1e-6)


def test_identical_sets_are_at_distance_zero():
    """Never below 0: rounding leaves 2 tr(S) - 2 tr((S S)^1/2) at about -1e-13 for half of
    these seeds, which the distance clamps."""
    for seed in range(8):
        features = torch.randn(300, 32, generator=torch.Generator().manual_seed(seed))
        stats = feature_statistics(features)
        assert 0 <= frechet_distance(*stats, *stats) < 1e-8


def test_mean_shift_adds_its_squared_norm():
    features = torch.randn(300, 8, generator=torch.Generator().manual_seed(2))
    mu, sigma = feature_statistics(features)
    shift = torch.full((8,), 0.5, dtype=torch.float64)
    assert frechet_distance(mu, sigma, mu + shift, sigma) == pytest.approx(8 * 0.25)


def test_statistics_need_at_least_two_samples():
    with pytest.raises(ValueError, match="N >= 2"):
        feature_statistics(torch.randn(1, 4))


def test_label_entropy_is_the_entropy_of_the_label_histogram_in_nats():
    assert label_entropy(torch.arange(1000) % 10) == pytest.approx(np.log(10))  # every digit alike
    one_mode = label_entropy(torch.full((50,), 3))
    assert one_mode == 0.0 and np.copysign(1.0, one_mode) == 1.0  # 0, not -0.0, in the JSON
    assert label_entropy(torch.tensor([2, 7] * 25)) == pytest.approx(np.log(2))
    labels = torch.tensor([0] * 6 + [1] * 3 + [2])  # h = (0.6, 0.3, 0.1)
    h = np.array([0.6, 0.3, 0.1])
    assert label_entropy(labels) == pytest.approx(-(h * np.log(h)).sum())


def test_reference_statistics_are_remembered_by_content(tmp_path, monkeypatch):
    """Against an empty cache: one kept from another process may have summed the features with
    another thread count (float32 rounding, ~1e-7 relative), which the key leaves out."""
    from deepzoo.metrics import fid
    from deepzoo.metrics.fid import extract_features, feature_statistics, shipped_net_statistics
    from deepzoo.models.features import mnist_feature_net

    monkeypatch.setenv("DEEPZOO_CACHE", str(tmp_path))
    monkeypatch.setattr(fid, "_REFERENCE_STATISTICS", {})

    x = torch.rand(50, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    first, again = shipped_net_statistics(x), shipped_net_statistics(x.clone())
    assert first[0] is again[0]  # the same entry: equal bytes
    torch.testing.assert_close(first, feature_statistics(extract_features(mnist_feature_net(), x)))
    changed = x.clone()
    changed[0, 0, 0, 0] += 0.5
    assert not torch.equal(shipped_net_statistics(changed)[0], first[0])
    assert shipped_net_statistics(x, scenes=True)[0] is not first[0]  # the kind of features is in the key


def test_scene_features_average_the_classifiers_windows():
    from deepzoo.metrics.fid import scene_features
    from deepzoo.models.features import mnist_feature_net, window_features

    x = torch.rand(3, 1, 44, 44, generator=torch.Generator().manual_seed(0))
    windows = window_features(mnist_feature_net(), x)  # (3, 128, 3, 3): windows 8 pixels apart
    assert windows.shape[-2:] == (3, 3)
    torch.testing.assert_close(scene_features(x), windows.mean((2, 3)))


def test_reference_statistics_are_stored_on_disk_for_the_next_process(tmp_path, monkeypatch):
    """A new process (an empty memory) reads the statistics from the cache without extracting
    features; bf16 autocast, which changes the features, is a different entry; a damaged file is
    computed again and replaced."""
    from deepzoo.metrics import fid

    monkeypatch.setenv("DEEPZOO_CACHE", str(tmp_path))
    monkeypatch.setattr(fid, "_REFERENCE_STATISTICS", {})
    x = torch.rand(40, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    first = fid.shipped_net_statistics(x)
    (stored,) = (tmp_path / "fid-statistics").iterdir()

    def no_extraction(*args, **kwargs):
        raise AssertionError("features extracted although the statistics are cached")

    extract = fid.extract_features
    monkeypatch.setattr(fid, "extract_features", no_extraction)
    monkeypatch.setattr(fid, "_REFERENCE_STATISTICS", {})
    again = fid.shipped_net_statistics(x)
    assert torch.equal(again[0], first[0]) and torch.equal(again[1], first[1])

    monkeypatch.setattr(fid, "_REFERENCE_STATISTICS", {})
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(AssertionError, match="extracted"):
        fid.shipped_net_statistics(x)

    monkeypatch.setattr(fid, "extract_features", extract)
    stored.write_bytes(b"not a safetensors file")
    monkeypatch.setattr(fid, "_REFERENCE_STATISTICS", {})
    torch.testing.assert_close(fid.shipped_net_statistics(x), first, rtol=0, atol=0)
    monkeypatch.setattr(fid, "_REFERENCE_STATISTICS", {})
    monkeypatch.setattr(fid, "extract_features", no_extraction)
    torch.testing.assert_close(fid.shipped_net_statistics(x), first, rtol=0, atol=0)  # replaced


def test_sample_quality_scores_the_classifiers_predictions_against_the_asked_labels():
    """label_accuracy is the share of samples the feature classifier labels as asked (each
    sample against its own label), label_entropy that of its predicted labels."""
    from deepzoo.metrics.fid import sample_quality
    from deepzoo.models.features import mnist_feature_net

    net = mnist_feature_net()
    generator = torch.Generator().manual_seed(0)
    samples, reference = torch.rand(40, 1, 28, 28, generator=generator), torch.rand(30, 1, 28, 28)
    predicted = net(samples).argmax(1)
    asked = predicted.clone()
    asked[:10] = (predicted[:10] + 1) % 10  # 30 of the 40 as asked
    scores = sample_quality(samples, reference, asked, net=net)
    assert scores["label_accuracy"] == pytest.approx(0.75, abs=1e-12)
    assert scores["label_entropy"] == pytest.approx(label_entropy(predicted), abs=1e-12)
