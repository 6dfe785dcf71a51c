"""A gradient checker: analytic gradients (autograd through any hand-written backward) against
central differences in float64,  df/dx_i ~ (f(x + h e_i) - f(x - h e_i)) / 2h,  with error
O(h^2). The relative error |a - n| / max(|a| + |n|, tiny) is reported per input."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def numerical_gradient(
    f: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor], h: float = 1e-6
) -> list[torch.Tensor]:
    """Central-difference gradient of the scalar sum of f(*inputs) w.r.t. each float64 input."""
    grads = []
    for x in inputs:
        grad = torch.zeros_like(x)
        flat, flat_grad = x.data.view(-1), grad.view(-1)
        for i in range(flat.numel()):
            original = flat[i].item()
            flat[i] = original + h
            plus = f(*inputs).sum().item()
            flat[i] = original - h
            minus = f(*inputs).sum().item()
            flat[i] = original
            flat_grad[i] = (plus - minus) / (2 * h)
        grads.append(grad)
    return grads


def gradient_errors(
    f: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor], h: float = 1e-6
) -> list[float]:
    """Max relative error between autograd's and the numerical gradient, one per input.
    Inputs must be float64 tensors with requires_grad=True."""
    for x in inputs:
        if x.dtype != torch.float64 or not x.requires_grad:
            raise ValueError("gradient checks need float64 inputs with requires_grad=True")
    analytic = torch.autograd.grad(f(*inputs).sum(), list(inputs))
    with torch.no_grad():
        numeric = numerical_gradient(f, inputs, h)
    return [
        ((a - n).abs() / (a.abs() + n.abs()).clamp(min=1e-12)).max().item() for a, n in zip(analytic, numeric)
    ]


def check_gradients(
    f: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor], tolerance: float = 1e-6, h: float = 1e-6
) -> None:
    """Raise AssertionError naming the input whose analytic gradient is off by more than `tolerance`."""
    for index, error in enumerate(gradient_errors(f, inputs, h)):
        if error > tolerance:
            raise AssertionError(
                f"gradient of input {index} is off: max relative error {error:.3g} > {tolerance}"
            )
