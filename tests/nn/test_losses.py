import pytest
import torch
import torch.nn.functional as F

from deepzoo.gradcheck import check_gradients
from deepzoo.nn.losses import multiclass_svm_loss, regularization, softmax_cross_entropy


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
