import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deepzoo.gradcheck import check_gradients
from deepzoo.nn.losses import PerceptualLoss, multiclass_svm_loss, regularization, softmax_cross_entropy


def _data(n=6, c=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, c, generator=generator, dtype=torch.float64, requires_grad=True)
    return scores, torch.randint(0, c, (n,), generator=generator)


def test_svm_loss_equals_a_loop_over_the_definition():
    scores, labels = _data()
    s = scores.detach()
    expected = 0.0
    for i in range(6):
        for j in range(4):
            if j != labels[i]:
                expected += max(0.0, float(s[i, j] - s[i, labels[i]] + 1.0))
    assert multiclass_svm_loss(scores, labels).item() == pytest.approx(expected / 6)


def test_svm_loss_is_torch_multi_margin_loss_times_the_class_count():
    scores, labels = _data(20, 7)
    reference = F.multi_margin_loss(scores, labels, p=1, margin=1.0) * 7
    torch.testing.assert_close(multiclass_svm_loss(scores, labels), reference)


def test_softmax_cross_entropy_equals_torch_and_is_stable():
    scores, labels = _data(20, 7)
    torch.testing.assert_close(softmax_cross_entropy(scores, labels), F.cross_entropy(scores, labels))
    huge = torch.tensor([[1000.0, 0.0, -1000.0]], dtype=torch.float64)
    assert softmax_cross_entropy(huge, torch.tensor([0])).item() == pytest.approx(0.0)


@pytest.mark.parametrize("loss", [multiclass_svm_loss, softmax_cross_entropy])
def test_hand_written_backward_passes_gradcheck(loss):
    scores, labels = _data()
    with torch.no_grad():
        scores += 0.01  # keep away from hinge kinks
    check_gradients(lambda s: loss(s, labels), [scores])
    assert torch.autograd.gradcheck(lambda s: loss(s, labels), (scores,))


def test_regularizers():
    w = torch.tensor([[1.0, -2.0], [0.5, 0.0]])
    assert regularization(w, "l2").item() == pytest.approx(5.25)
    assert regularization(w, "l1").item() == pytest.approx(3.5)
    assert regularization(w, "elastic", beta=0.5).item() == pytest.approx(0.5 * 5.25 + 3.5)
    assert regularization(w, "none").item() == 0
    with pytest.raises(ValueError, match="regularization"):
        regularization(w, "l3")


@pytest.mark.parametrize("loss", [multiclass_svm_loss, softmax_cross_entropy])
def test_labels_of_another_length_or_shape_are_refused(loss):
    scores, labels = _data(6, 4)
    for bad in (labels[:5], labels[:, None], torch.cat([labels, labels])):
        with pytest.raises(ValueError, match=r"labels \(N,\)"):
            loss(scores, bad)


def _perceptual_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(inplace=True), nn.Conv2d(4, 4, 3), nn.ReLU(inplace=True))


def test_the_perceptual_loss_freezes_a_copy_and_refuses_taps_outside_the_network():
    net = _perceptual_net()
    loss = PerceptualLoss(net, taps=[0, 3])
    assert not any(p.requires_grad for p in loss.parameters())  # an optimizer over a model never trains it
    assert all(p.requires_grad for p in net.parameters())  # the caller's network is left as it was
    for taps in ([4], [-1], []):
        with pytest.raises(ValueError, match="taps must index"):
            PerceptualLoss(net, taps=taps)


def test_a_tap_followed_by_an_inplace_activation_keeps_its_value_and_its_gradient():
    """Tap 0 is the first convolution's output, which the next in-place ReLU would overwrite (its
    negative entries set to 0) and break the normalization's backward pass."""
    net = _perceptual_net()
    x, y = torch.randn(2, 1, 8, 8, requires_grad=True), torch.randn(2, 1, 8, 8)
    distance = PerceptualLoss(net, taps=[0, 1]).forward(x, y)
    with torch.no_grad():
        a, b = net[0](x), net[0](y)
    unit = lambda f: f / f.norm(dim=1, keepdim=True).clamp_min(1e-10)  # noqa: E731 - F.normalize
    first = (unit(a) - unit(b)).square().sum(1).mean((1, 2))
    second = (unit(a.relu()) - unit(b.relu())).square().sum(1).mean((1, 2))
    torch.testing.assert_close(distance.detach(), first + second)
    distance.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
