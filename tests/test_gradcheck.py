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


class HalfSlope(torch.autograd.Function):
    """x -> scale x^2 with a backward of half the true slope, except where `exact` is True."""

    @staticmethod
    def forward(ctx, x, scale, exact):
        ctx.save_for_backward(x, exact)
        ctx.scale = scale
        return scale * x**2

    @staticmethod
    def backward(ctx, g):
        x, exact = ctx.saved_tensors
        slope = 2 * ctx.scale * x
        return g * torch.where(exact, slope, slope / 2), None, None


def test_the_error_is_the_worst_elements_relative_error_at_any_scale():
    """A slope half the true one has relative error |a - n| / (|a| + |n|) = (1/2) / (3/2) = 1/3,
    for gradients of size 1e-4 as for size 1; one wrong element among 100 is reported as such."""
    x = torch.linspace(0.5, 1.5, 100, dtype=torch.float64, requires_grad=True)
    wrong_everywhere, wrong_once = torch.zeros(100, dtype=torch.bool), torch.arange(100) != 37
    for scale, exact in ((1.0, wrong_everywhere), (1e-4, wrong_everywhere), (1.0, wrong_once)):
        error = gradient_errors(lambda t, s=scale, e=exact: HalfSlope.apply(t, s, e), [x])[0]
        assert error == pytest.approx(1 / 3, rel=1e-4), (scale, exact.sum())


def test_the_checker_names_the_wrong_input_and_holds_to_its_tolerance():
    x = torch.linspace(0.5, 1.5, 10, dtype=torch.float64, requires_grad=True)
    y = x.detach().clone().requires_grad_(True)
    wrong = torch.zeros(10, dtype=torch.bool)

    def f(a, b):  # a's gradient right, b's half its slope
        return a**2 + HalfSlope.apply(b, 1.0, wrong)

    with pytest.raises(AssertionError, match="input 1 is off: max relative error 0.333 > 0.3"):
        check_gradients(f, [x, y], tolerance=0.3)
    check_gradients(f, [x, y], tolerance=0.34)
