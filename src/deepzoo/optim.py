"""Optimizers written from their update equations (the course notes' and the papers' forms).

Each matches `torch.optim`'s trajectory (tests compare 100 steps, weight decay included), so the
trainer keeps torch's fused implementations while these stay readable. g_t is the gradient at
step t (t = 1, 2, ...), lr the learning rate, wd the weight decay.

Where the notes' form differs from PyTorch's:
- SGD momentum. Notes: v <- rho v - lr g; x <- x + v. PyTorch (and here): b <- rho b + g;
  x <- x - lr b. With a constant lr the two agree with v = -lr b; under a schedule PyTorch's b
  carries no old learning rates, so the trainer's schedules act at once.
- Nesterov. Notes: v <- rho v - lr grad f(x + rho v); x <- x + v (the look-ahead form).
  With x~ = x + rho v this becomes x~ <- x~ - lr g(x~) + rho v_new, which is PyTorch's
  b <- rho b + g; x~ <- x~ - lr (g + rho b). Our parameters are x~; a test checks the equivalence.
- AdaGrad / RMSProp. The notes divide by sqrt(S_t) + eps with the accumulator *before* adding g_t^2
  (at t = 1 that is a step of lr g / eps); we use S_t including g_t^2 (Duchi et al., 2011;
  Hinton's RMSProp; PyTorch). eps sits outside the square root, as in the notes and PyTorch
  (TensorFlow puts it inside: sqrt(S + eps)).
- Adam. The notes' first moment lacks the (1 - beta1) factor; with bias correction that would
  overshoot by 1 / (1 - beta1). We follow Kingma & Ba (2015): m <- b1 m + (1 - b1) g.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch.optim import Optimizer

Params = Iterable[torch.Tensor] | Iterable[dict]


class _Optimizer(Optimizer):
    """Shared step loop: `update(p, grad, state, group)` is each optimizer's equation."""

    def update(self, p: torch.Tensor, grad: torch.Tensor, state: dict, group: dict) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                state["step"] = state.get("step", 0) + 1
                self.update(p, p.grad, state, group)
        return loss


def _check(lr: float, weight_decay: float) -> None:
    if lr < 0:
        raise ValueError(f"learning rate must be >= 0, got {lr}")
    if weight_decay < 0:
        raise ValueError(f"weight decay must be >= 0, got {weight_decay}")


class SGD(_Optimizer):
    """g <- g + wd x;  b <- rho b + g (b_1 = g);  x <- x - lr (g + rho b if nesterov else b).
    momentum = 0 is plain SGD: x <- x - lr g."""

    def __init__(
        self,
        params: Params,
        lr: float = 1e-2,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        _check(lr, weight_decay)
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay))

    def update(self, p, grad, state, group):
        g = grad.add(p, alpha=group["weight_decay"]) if group["weight_decay"] else grad
        rho = group["momentum"]
        if rho:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = g.clone()
            else:
                state["momentum_buffer"].mul_(rho).add_(g)
            b = state["momentum_buffer"]
            g = g + rho * b if group["nesterov"] else b
        p.add_(g, alpha=-group["lr"])


class AdaGrad(_Optimizer):
    """g <- g + wd x;  S <- S + g^2;  x <- x - lr g / (sqrt(S) + eps)."""

    def __init__(
        self, params: Params, lr: float = 1e-2, eps: float = 1e-10, weight_decay: float = 0.0
    ) -> None:
        _check(lr, weight_decay)
        super().__init__(params, dict(lr=lr, eps=eps, weight_decay=weight_decay))

    def update(self, p, grad, state, group):
        g = grad.add(p, alpha=group["weight_decay"]) if group["weight_decay"] else grad
        S = state.setdefault("sum", torch.zeros_like(p))
        S.addcmul_(g, g)
        p.addcdiv_(g, S.sqrt().add_(group["eps"]), value=-group["lr"])


class RMSProp(_Optimizer):
    """g <- g + wd x;  S <- rho S + (1 - rho) g^2;  x <- x - lr g / (sqrt(S) + eps)."""

    def __init__(
        self,
        params: Params,
        lr: float = 1e-2,
        rho: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        _check(lr, weight_decay)
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay))

    def update(self, p, grad, state, group):
        g = grad.add(p, alpha=group["weight_decay"]) if group["weight_decay"] else grad
        S = state.setdefault("square_avg", torch.zeros_like(p))
        S.mul_(group["rho"]).addcmul_(g, g, value=1 - group["rho"])
        p.addcdiv_(g, S.sqrt().add_(group["eps"]), value=-group["lr"])


class Adam(_Optimizer):
    """Kingma & Ba (2015), Algorithm 1, with bias correction:

        m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2
        x <- x - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)

    Adam: g <- g + wd x (L2 regularization through the gradient).
    AdamW (`decoupled=True`, Loshchilov & Hutter, 2019): x <- x (1 - lr wd) before the step.
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled: bool = False,
    ) -> None:
        _check(lr, weight_decay)
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must lie in [0, 1), got {betas}")
        super().__init__(
            params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, decoupled=decoupled)
        )

    def update(self, p, grad, state, group):
        lr, (b1, b2), wd, t = group["lr"], group["betas"], group["weight_decay"], state["step"]
        g = grad
        if wd and group["decoupled"]:
            p.mul_(1 - lr * wd)
        elif wd:
            g = grad.add(p, alpha=wd)
        m = state.setdefault("exp_avg", torch.zeros_like(p))
        v = state.setdefault("exp_avg_sq", torch.zeros_like(p))
        m.lerp_(g, 1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        m_hat_scale = lr / (1 - b1**t)
        denominator = (v.sqrt() / (1 - b2**t) ** 0.5).add_(group["eps"])
        p.addcdiv_(m, denominator, value=-m_hat_scale)


class AdamW(Adam):
    """Adam with decoupled weight decay (default wd = 0.01, as in PyTorch)."""

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, decoupled=True)
