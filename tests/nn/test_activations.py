import pytest
import torch
import torch.nn.functional as F

from deepzoo.nn import activations as A

X = torch.linspace(-30, 30, 2001, dtype=torch.float64)


@pytest.mark.parametrize(
    "ours,reference",
    [
        (A.sigmoid, torch.sigmoid),
        (A.tanh, torch.tanh),
        (A.relu, F.relu),
        (lambda x: A.leaky_relu(x, 0.1), lambda x: F.leaky_relu(x, 0.1)),
        (lambda x: A.elu(x, 1.3), lambda x: F.elu(x, 1.3)),
        (A.selu, F.selu),
        (A.gelu, F.gelu),
        (lambda x: A.gelu(x, approximate=True), lambda x: F.gelu(x, approximate="tanh")),
    ],
    ids=["sigmoid", "tanh", "relu", "leaky_relu", "elu", "selu", "gelu", "gelu_tanh"],
)
def test_activation_and_its_gradient_equal_torch(ours, reference):
    x_ours, x_ref = X.clone().requires_grad_(), X.clone().requires_grad_()
    y_ours, y_ref = ours(x_ours), reference(x_ref)
    torch.testing.assert_close(y_ours, y_ref)
    y_ours.sum().backward()
    y_ref.sum().backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad)


def test_sigmoid_does_not_overflow():
    assert torch.isfinite(A.sigmoid(torch.tensor([-1e4, 1e4]))).all()


def test_prelu_equals_torch_with_copied_slopes():
    ours, reference = A.PReLU(3), torch.nn.PReLU(3)
    with torch.no_grad():
        reference.weight.copy_(torch.tensor([0.1, 0.25, -0.3]))
        ours.weight.copy_(reference.weight)
    x = torch.randn(4, 3, 5)
    torch.testing.assert_close(ours(x), reference(x))
    ours(x).sum().backward()
    reference(x).sum().backward()
    torch.testing.assert_close(ours.weight.grad, reference.weight.grad)


def test_maxout_is_the_max_of_its_linear_pieces():
    torch.manual_seed(0)
    layer = A.Maxout(6, 4, pieces=3)
    x = torch.randn(5, 6)
    W, b = layer.linear.weight.detach().view(4, 3, 6), layer.linear.bias.detach().view(4, 3)
    expected = torch.empty(5, 4)
    for n in range(5):
        for o in range(4):
            expected[n, o] = max(float(W[o, k] @ x[n] + b[o, k]) for k in range(3))
    torch.testing.assert_close(layer(x), expected)


def test_unknown_activation_name_is_rejected():
    with pytest.raises(ValueError, match="activation must be one of"):
        A.Activation("swish")
