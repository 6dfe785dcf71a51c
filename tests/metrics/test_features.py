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
    # on a larger (here wider than tall) image, window (i, j) reads the body's map at rows 8i..,
    # columns 8j.. only
    canvas = torch.zeros(4, 1, 64, 96)
    canvas[:, :, 16:44, 24:52] = x
    features = window_features(net, canvas)
    assert features.shape == (4, 128, 6, 10)
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


def test_the_perceptual_distance_reads_each_stages_last_relu_on_standardized_inputs(mnist_test):
    """perceptual_loss(): the shipped net (frozen) tapped after the last ReLU of each stage (32, 64
    and 128 channels at 28, 14 and 7 pixels) on (x - 0.1307) / 0.3081, the classifier's own input;
    d(x, y) = sum over taps of the mean over positions of the squared distance of the unit-normalized
    channel vectors, recomputed here layer by layer."""
    from deepzoo.models.features import perceptual_loss

    net = mnist_feature_net()
    assert not any(p.requires_grad for p in net.parameters())
    x, y = mnist_test.tensors["x"][:4], mnist_test.tensors["x"][4:8]

    def by_hand(images):
        h, taps = (images - 0.1307) / 0.3081, []
        for layer, following in zip(net.body, list(net.body)[1:]):
            h = layer(h)
            if isinstance(following, torch.nn.MaxPool2d):
                taps.append(h / h.norm(dim=1, keepdim=True).clamp_min(1e-10))
        return taps

    loss = perceptual_loss()
    assert [tuple(f.shape[1:]) for f in loss.features(x)] == [(32, 28, 28), (64, 14, 14), (128, 7, 7)]
    expected = sum((a - b).square().sum(1).mean((1, 2)) for a, b in zip(by_hand(x), by_hand(y)))
    torch.testing.assert_close(loss(x, y), expected, rtol=1e-4, atol=1e-6)


def test_each_call_gives_its_own_feature_net_so_converting_one_leaves_the_others():
    """A reward or a metric that moves or converts its copy (`.double()`) must not change the
    network every FID evaluation after it reads."""
    converted = mnist_feature_net().double()
    fresh = mnist_feature_net()
    assert converted is not fresh
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in fresh.parameters())
    assert not fresh.training
    for a, b in zip(converted.parameters(), fresh.parameters()):
        torch.testing.assert_close(a, b.double(), rtol=0, atol=0)
