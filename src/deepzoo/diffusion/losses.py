"""Training objectives as weighted denoising losses (EDM, Eq. 2 and 8):

    L = E_{sigma ~ p, x_0, eps} lambda(sigma) ||D(x_0 + sigma eps; sigma) - x_0||^2
      = E lambda(sigma) c_out(sigma)^2 ||F(c_in x_hat; c_noise) - (x_0 - c_skip x_hat) / c_out||^2

The second form is what is computed (the network's own target, stable at small sigma). Each
classic objective is a (p(sigma), lambda(sigma)) pair:

    ddpm    t ~ U{0..T-1}, sigma = sigma_VP(t);  lambda = 1 / sigma^2      == ||eps_hat - eps||^2
    edm     ln sigma ~ N(P_mean, P_std^2);       lambda = (sigma^2 + sd^2) / (sigma sd)^2
    flow    t ~ U(0, 1) (or logit-normal), sigma = t / (1 - t);  lambda = (1 + sigma)^2 / sigma^2
                                                                == ||u_hat - (eps - x_0)||^2
    score   ln sigma ~ U(ln sigma_min, ln sigma_max);   lambda = 1 / sigma^2
                                                                == ||sigma s_hat + eps||^2

Each returns {"loss": mean over the batch of the per-example sum over pixels / pixels}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from deepzoo.diffusion.preconditioning import Denoiser
from deepzoo.diffusion.schedules import FLOW_T_MAX, VPSchedule
from deepzoo.nn.precision import compute_dtype


def _expand(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape((-1,) + (1,) * (like.ndim - 1)).to(like.dtype)


def weighted_denoising_loss(
    denoiser: Denoiser,
    x0: torch.Tensor,
    sigma: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor | None = None,
    eps: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per example (B,): weight * ||D(x0 + sigma eps; sigma) - x0||^2 averaged over the pixels,
    computed through the network's effective target. weight is lambda(sigma), (B,)."""
    eps = torch.randn_like(x0) if eps is None else eps
    x_hat = x0 + _expand(sigma, x0) * eps
    c_skip, c_out, _ = denoiser.precond.coefficients(sigma.double())
    target = (x0 - _expand(c_skip, x0) * x_hat) / _expand(c_out, x0)
    dtype = compute_dtype(x0.dtype)
    f = denoiser.raw(x_hat, sigma, labels).to(dtype)
    effective = (weight.double() * c_out.square()).to(dtype)
    return effective * (f - target).square().flatten(1).mean(1)


class SigmaObjective:
    """An objective of the table: sigma drawn by `sample_sigma`, weighted by `weight`."""

    def sample_sigma(self, n: int, device: torch.device) -> torch.Tensor:
        raise NotImplementedError

    def weight(self, sigma: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, denoiser: Denoiser, x0: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
        sigma = self.sample_sigma(len(x0), x0.device)
        return {"loss": weighted_denoising_loss(denoiser, x0, sigma, self.weight(sigma), labels).mean()}


@dataclass(frozen=True)
class DDPMLoss(SigmaObjective):
    """Ho et al. (2020): t uniform over the T steps, the epsilon MSE."""

    schedule: VPSchedule

    def sample_sigma(self, n: int, device: torch.device) -> torch.Tensor:
        t = torch.randint(0, self.schedule.steps, (n,))
        return self.schedule.sigmas[t].to(device)

    @staticmethod
    def weight(sigma: torch.Tensor) -> torch.Tensor:
        return sigma.double().pow(-2)


@dataclass(frozen=True)
class EDMLoss(SigmaObjective):
    """Karras et al. (2022): ln sigma ~ N(p_mean, p_std^2), lambda = (sigma^2 + sd^2) / (sigma sd)^2
    (unit effective weight with EDM preconditioning)."""

    p_mean: float = -1.2
    p_std: float = 1.2
    sigma_data: float = 0.5

    def sample_sigma(self, n: int, device: torch.device) -> torch.Tensor:
        return (self.p_mean + self.p_std * torch.randn(n, dtype=torch.float64)).exp().to(device)

    def weight(self, sigma: torch.Tensor) -> torch.Tensor:
        sd = self.sigma_data
        return (sigma.double().square() + sd**2) / (sigma.double() * sd).square()


@dataclass(frozen=True)
class ScoreMatchingLoss(SigmaObjective):
    """Song et al. (2021), the VE SDE's denoising score matching: sigma = sigma_min (sigma_max /
    sigma_min)^u with u ~ U(0, 1) (log-uniform), lambda = 1 / sigma^2, so the loss is
    ||sigma s_hat(x_hat; sigma) + eps||^2 with s_hat = (D - x_hat) / sigma^2 the score of the
    denoiser (their likelihood_weighting=False, reduce_mean=True; EDM's VELoss, whose defaults
    0.02 and 100 these are)."""

    sigma_min: float = 0.02
    sigma_max: float = 100.0

    def __post_init__(self) -> None:
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {self.sigma_min:g} and {self.sigma_max:g}")

    def sample_sigma(self, n: int, device: torch.device) -> torch.Tensor:
        u = torch.rand(n, dtype=torch.float64)
        return (self.sigma_min * (self.sigma_max / self.sigma_min) ** u).to(device)

    @staticmethod
    def weight(sigma: torch.Tensor) -> torch.Tensor:
        return sigma.double().pow(-2)


@dataclass(frozen=True)
class FlowMatchingLoss:
    """Lipman et al. (2023) / Liu et al. (2023): t ~ U(0, 1) or logit-normal (SD3), the velocity
    MSE ||u_hat - (eps - x_0)||^2, i.e. lambda = 1 / t^2 = (1 + sigma)^2 / sigma^2."""

    t_distribution: Literal["uniform", "logit-normal"] = "uniform"
    t_max: float = FLOW_T_MAX
    """Upper end of t (t = 1 is sigma = inf)."""

    def sample_t(self, n: int, device: torch.device) -> torch.Tensor:
        if self.t_distribution == "uniform":
            t = torch.rand(n, dtype=torch.float64)
        else:
            t = torch.sigmoid(torch.randn(n, dtype=torch.float64))
        return (t.clamp(1e-5, 1.0) * self.t_max).to(device)

    @staticmethod
    def weight(sigma: torch.Tensor) -> torch.Tensor:
        sigma = sigma.double()
        return (1 + sigma).square() / sigma.square()

    def __call__(
        self,
        denoiser: Denoiser,
        x0: torch.Tensor,
        labels: torch.Tensor | None = None,
        eps: torch.Tensor | None = None,
    ) -> dict:
        """With `eps`, the pairs (eps, x0) are fixed couplings (reflow) rather than independent draws."""
        t = self.sample_t(len(x0), x0.device)
        sigma = t / (1 - t)
        return {"loss": weighted_denoising_loss(denoiser, x0, sigma, self.weight(sigma), labels, eps).mean()}
