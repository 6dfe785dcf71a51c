import pytest
import torch
import torch.nn.functional as F

from deepzoo.nn import activations as A

X = torch.cat(
    [torch.linspace(-30, 30, 2000, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)]
)  # and 0 exactly


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


@pytest.mark.parametrize(
    "ours,reference",
    [(A.sigmoid, torch.sigmoid), (A.tanh, torch.tanh), (A.elu, F.elu), (A.selu, F.selu)],
    ids=["sigmoid", "tanh", "elu", "selu"],
)
def test_values_and_gradients_stay_finite_where_an_exponential_overflows(ours, reference):
    """float32 e^x overflows past x = 88.7: sigmoid, tanh and elu must never form it."""
    x_ours = torch.tensor([-1e4, -100.0, -0.5, 0.0, 0.5, 100.0, 1e4], requires_grad=True)
    x_ref = x_ours.detach().clone().requires_grad_()
    y_ours, y_ref = ours(x_ours), reference(x_ref)
    torch.testing.assert_close(y_ours, y_ref)
    y_ours.sum().backward()
    y_ref.sum().backward()
    assert torch.isfinite(x_ours.grad).all()
    torch.testing.assert_close(x_ours.grad, x_ref.grad)


def test_prelu_equals_torch_with_copied_slopes():
    ours, reference = A.PReLU(3), torch.nn.PReLU(3)
    with torch.no_grad():
        reference.weight.copy_(torch.tensor([0.1, 0.25, -0.3]))
        ours.weight.copy_(reference.weight)
    x = torch.randn(4, 3, 5)
    x[0, :, :2] = 0.0  # the kink, where the gradient is a, as torch's
    x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    torch.testing.assert_close(ours(x_ours), reference(x_ref))
    ours(x_ours).sum().backward()
    reference(x_ref).sum().backward()
    torch.testing.assert_close(ours.weight.grad, reference.weight.grad)
    torch.testing.assert_close(x_ours.grad, x_ref.grad)


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
