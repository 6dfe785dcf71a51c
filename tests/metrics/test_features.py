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


def test_window_features_are_the_classifier_features_of_each_window(mnist_test):
    from deepzoo.models.features import window_features

    net = mnist_feature_net()
    x = mnist_test.tensors["x"][:4]
    torch.testing.assert_close(window_features(net, x)[:, :, 0, 0], net.features(x))
    # on a larger image, window (i, j) reads the body's map at rows 8i.., columns 8j.. only
    canvas = torch.zeros(4, 1, 64, 64)
    canvas[:, :, 16:44, 24:52] = x
    features = window_features(net, canvas)
    assert features.shape == (4, 128, 6, 6)
    maps = net.body((canvas - net.config.input_mean) / net.config.input_std)
    expected = net.features_head(maps[:, :, 2:5, 3:6])
    torch.testing.assert_close(features[:, :, 2, 3], expected, rtol=1e-4, atol=1e-5)


def test_scene_fid_separates_scenes_from_blurred_scenes():
    from torch.nn.functional import avg_pool2d, interpolate

    from deepzoo.data.scenes import mnist_scenes
    from deepzoo.metrics.fid import scene_fid

    scenes = mnist_scenes("test", 600, seed=3).tensors["x"]
    a, b = scenes[:300], scenes[300:]
    blurred = interpolate(avg_pool2d(b, 4), scale_factor=4, mode="bilinear")
    assert scene_fid(a, a) < 1e-6
    assert scene_fid(b, a) < scene_fid(blurred, a) / 3
