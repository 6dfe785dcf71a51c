"""Network parameterizations as one denoiser (EDM, Karras et al., 2022, Eq. 7 and Table 1):

    D(x_hat; sigma) = c_skip(sigma) x_hat + c_out(sigma) F(c_in(sigma) x_hat; c_noise(sigma))

where x_hat = x_0 + sigma eps and F is the raw network. Each classic target is a choice of the four:

    kind      F predicts                       c_skip              c_out               c_in
    epsilon   eps (DDPM)                       1                   -sigma              1/sqrt(1+sigma^2)
    x0        x_0                              0                   1                   1/r
    v         alpha eps - s x_0 (Salimans)     sd^2/r^2            -sigma sd/r         1/r
    edm       EDM's mixture                    sd^2/r^2            sigma sd/r          1/r
    velocity  u = eps - x_0 (flow matching)    1/(1+sigma)         -sigma/(1+sigma)    1/(1+sigma)
    score     sigma grad log p (Song's VE)     1                   sigma               1

with r = sqrt(sigma^2 + sd^2) and sd the data's standard deviation sigma_data (for v, sd = 1 is
the VP case). For epsilon the network sees the VP state x_t = x_hat / sqrt(1 + sigma^2); for
velocity the flow state x_t = x_hat / (1 + sigma) = (1 - t) x_0 + t eps. score is EDM's VE
preconditioning (Song et al., 2021, NCSN++ with its output divided by sigma): the network sees x_hat
itself and F = (D - x_hat) / sigma = sigma grad_x log p(x_hat; sigma), whose ideal value is -eps.

c_noise is the time the network is told: `t_scale` times the schedule's native time of sigma
(DDPM: the step index 0..999; flow: t in [0, 1]) or EDM's ln(sigma) / 4.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from deepzoo.diffusion.schedules import Schedule
from deepzoo.nn.precision import compute_dtype

Kind = Literal["epsilon", "x0", "v", "edm", "velocity", "score"]


@dataclass(frozen=True)
class Preconditioning:
    kind: Kind = "edm"
    sigma_data: float = 0.5

    def coefficients(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(c_skip, c_out, c_in) at sigma (any shape; float64 for inf-safe flow coefficients)."""
        sd, s2 = self.sigma_data, sigma.square()
        if self.kind == "epsilon":
            return torch.ones_like(sigma), -sigma, (1 + s2).rsqrt()
        if self.kind == "x0":
            return torch.zeros_like(sigma), torch.ones_like(sigma), (s2 + sd**2).rsqrt()
        if self.kind in ("v", "edm"):
            root = (s2 + sd**2).sqrt()
            sign = -1.0 if self.kind == "v" else 1.0
            return sd**2 / (s2 + sd**2), sign * sigma * sd / root, 1 / root
        if self.kind == "velocity":
            return 1 / (1 + sigma), -sigma / (1 + sigma), 1 / (1 + sigma)
        if self.kind == "score":
            return torch.ones_like(sigma), sigma, torch.ones_like(sigma)
        raise ValueError(f"unknown parameterization {self.kind!r}")


class Denoiser(torch.nn.Module):
    """D(x_hat; sigma, labels) around a raw network F(x, c_noise, labels).

    `schedule` gives the network's notion of time (c_noise = t_scale * schedule.t_of_sigma(sigma));
    without one, c_noise = t_scale * ln(sigma) / 4 (EDM). t_scale spreads a small time range over
    the sinusoidal features' frequencies.
    """

    def __init__(self, net: torch.nn.Module, precond: Preconditioning, schedule: Schedule | None = None,
                 t_scale: float = 1.0) -> None:  # fmt: skip
        super().__init__()
        self.net, self.precond, self.schedule, self.t_scale = net, precond, schedule, t_scale

    def c_noise(self, sigma: torch.Tensor) -> torch.Tensor:
        if self.schedule is None:
            return self.t_scale * sigma.double().log() / 4
        return self.t_scale * self.schedule.t_of_sigma(sigma.double())

    def raw(
        self, x_hat: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """F(c_in x_hat; c_noise) for x_hat (B, ...) and sigma (B,)."""
        _, _, c_in = self.precond.coefficients(sigma.double())
        shape = (-1,) + (1,) * (x_hat.ndim - 1)
        c_noise = self.c_noise(sigma).to(compute_dtype(x_hat.dtype))
        return self.net(x_hat * c_in.to(x_hat.dtype).reshape(shape), c_noise, labels)

    def forward(
        self, x_hat: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        c_skip, c_out, _ = self.precond.coefficients(sigma.double())
        shape = (-1,) + (1,) * (x_hat.ndim - 1)
        dtype = compute_dtype(x_hat.dtype)
        f = self.raw(x_hat, sigma, labels).to(dtype)
        return c_skip.to(dtype).reshape(shape) * x_hat.to(dtype) + c_out.to(dtype).reshape(shape) * f
