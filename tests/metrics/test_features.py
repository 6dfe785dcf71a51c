import torch

from deepzoo.data import TensorData
from deepzoo.metrics.classification import classification_metrics
from deepzoo.metrics.fid import classifier_fid
from deepzoo.models.features import mnist_feature_net


def test_shipped_feature_classifier_is_accurate(mnist_test):
    metrics, _ = classification_metrics(mnist_feature_net(), mnist_test)
    assert metrics["accuracy"] >= 0.99


def test_classifier_fid_separates_real_digits_from_corrupted_ones(mnist_test):
    x = mnist_test.tensors["x"]
    real_a, real_b = x[:2000], x[2000:4000]
    noisy = (real_b + 0.5 * torch.rand(real_b.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    same = classifier_fid(real_a, real_a)
    halves = classifier_fid(real_a, real_b)
    corrupted = classifier_fid(real_a, noisy)
    assert same < 1e-6
    assert halves < corrupted / 10


def test_features_are_the_layer_before_the_classifier(mnist_test):
    net = mnist_feature_net()
    x = TensorData(mnist_test[slice(0, 8)]).tensors["x"]
    torch.testing.assert_close(net.head(net.features(x)), net(x))
    assert net.features(x).shape == (8, 128) and (net.features(x) >= 0).all()
