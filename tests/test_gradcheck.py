import pytest
import torch

from deepzoo.gradcheck import check_gradients, gradient_errors, numerical_gradient


def test_numerical_gradient_of_a_known_function():
    x = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    (grad,) = numerical_gradient(lambda t: (t**3).sum(), [x])
    torch.testing.assert_close(grad, 3 * x**2, rtol=1e-7, atol=1e-8)


def test_checker_passes_a_correct_backward_and_catches_a_wrong_one():
    class WrongSquare(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x**2

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * x  # should be 2 x

    x = torch.randn(5, dtype=torch.float64, requires_grad=True)
    check_gradients(lambda t: t**2, [x])
    assert gradient_errors(WrongSquare.apply, [x])[0] > 0.1
    with pytest.raises(AssertionError, match="input 0"):
        check_gradients(WrongSquare.apply, [x])


def test_checker_wants_float64_leaves():
    with pytest.raises(ValueError, match="float64"):
        gradient_errors(lambda t: t, [torch.randn(2, requires_grad=True)])
