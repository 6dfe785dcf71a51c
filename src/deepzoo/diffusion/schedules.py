"""Noising processes in the common form of EDM (Karras et al., 2022, Eq. 7):

    x_t = s(t) (x_0 + sigma(t) eps),   eps ~ N(0, I)

so that every process is one (s, sigma) pair, and x_hat = x_t / s(t) = x_0 + sigma eps is the
"variance-exploding" state every sampler works on.

    VP / DDPM   x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps   s = sqrt(abar), sigma = sqrt(1/abar - 1)
    VE / SMLD   x_t = x_0 + sigma_t eps                          s = 1, sigma = s_min (s_max / s_min)^t
    EDM         x_t = x_0 + t eps                                s = 1, sigma = t
    flow        x_t = (1 - t) x_0 + t eps                        s = 1 - t, sigma = t / (1 - t)

Each schedule maps its native time t to (s, sigma) and back (`t_of_sigma`). The VP schedule is the
discrete DDPM one (T steps, t an integer index, fractional t interpolating log sigma).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch

Spacing = Literal["linspace", "leading", "trailing"]


def _as_tensor(t: torch.Tensor | float) -> torch.Tensor:
    return t if isinstance(t, torch.Tensor) else torch.tensor(float(t), dtype=torch.float64)


class Schedule:
    """A noising process x_t = s(t) (x_0 + sigma(t) eps)."""

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def scale(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def t_of_sigma(self, sigma: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def common(self, t: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
        """(s(t), sigma(t))."""
        t = _as_tensor(t)
        return self.scale(t), self.sigma(t)

    def noised(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        """x_t in the process's native form, s(t) (x_0 + sigma(t) eps); t broadcasts over the batch."""
        s, sigma = self.common(t)
        shape = (-1,) + (1,) * (x0.ndim - 1)
        s, sigma = s.to(x0).reshape(shape), sigma.to(x0).reshape(shape)
        return s * (x0 + sigma * eps)


class VPSchedule(Schedule):
    """DDPM's discrete variance-preserving process over T steps (Ho et al., 2020; cosine: Nichol &
    Dhariwal, 2021). abar_t = prod_{i <= t} (1 - beta_i), t = 0..T-1."""

    def __init__(self, kind: Literal["linear", "cosine"] = "linear", steps: int = 1000,
                 beta_start: float = 1e-4, beta_end: float = 0.02) -> None:  # fmt: skip
        self.kind, self.steps = kind, steps
        if kind == "linear":
            betas = torch.linspace(beta_start, beta_end, steps, dtype=torch.float64)
        elif kind == "cosine":
            offset = 0.008
            f = torch.cos(
                (torch.arange(steps + 1, dtype=torch.float64) / steps + offset) / (1 + offset) * math.pi / 2
            )
            abar = f.square() / f[0].square()
            betas = (1 - abar[1:] / abar[:-1]).clamp(max=0.999)
        else:
            raise ValueError(f"VP schedule kind must be 'linear' or 'cosine', got {kind!r}")
        self.betas = betas
        self.alpha_bar = torch.cumprod(1 - betas, dim=0)
        self.sigmas = ((1 - self.alpha_bar) / self.alpha_bar).sqrt()  # increasing in t
        self.log_sigmas = self.sigmas.log()

    def _interp(self, table: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.double().clamp(0, self.steps - 1)
        low = t.floor().long().clamp(max=self.steps - 2)
        frac = t - low
        return table[low] * (1 - frac) + table[low + 1] * frac

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return self._interp(self.log_sigmas, _as_tensor(t)).exp()

    def scale(self, t: torch.Tensor) -> torch.Tensor:
        return (1 + self.sigma(t).square()).rsqrt()  # sqrt(abar) = 1 / sqrt(1 + sigma^2)

    def t_of_sigma(self, sigma: torch.Tensor) -> torch.Tensor:
        """The (fractional) index whose log sigma equals log sigma, by linear interpolation."""
        log_sigma = _as_tensor(sigma).double().log().clamp(self.log_sigmas[0], self.log_sigmas[-1])
        high = torch.searchsorted(self.log_sigmas, log_sigma.reshape(-1)).clamp(1, self.steps - 1)
        low = high - 1
        lo, hi = self.log_sigmas[low], self.log_sigmas[high]
        return (low + (log_sigma.reshape(-1) - lo) / (hi - lo)).reshape(log_sigma.shape)

    def timesteps(self, n: int, spacing: Spacing = "linspace") -> torch.Tensor:
        """n integer timesteps, decreasing, computed as diffusers' `timestep_spacing` computes them
        (numpy, floating point, np.round taking a tie to even), so its grids match value for value:
        linspace: round(linspace(0, T-1, n)) reversed, first T-1, last 0; leading: (n-1..0) *
        (T // n), last 0; trailing: round(arange(T, 0, -T/n)) - 1, first T-1. Two deliberate
        differences (docs/diffusion.md): for n = 1 linspace gives [T-1], not [0]; trailing keeps n
        values where arange's floating-point length gives diffusers n + 1 (the last -1)."""
        T = self.steps
        if not 1 <= n <= T:
            raise ValueError(f"need 1 <= n <= {T} timesteps, got {n}")
        if spacing == "linspace":
            steps = np.linspace(0, T - 1, n).round()[::-1] if n > 1 else np.array([T - 1.0])
        elif spacing == "leading":
            steps = np.arange(n - 1, -1, -1) * (T // n)
        elif spacing == "trailing":
            steps = np.arange(T, 0, -T / n).round()[:n] - 1
        else:
            raise ValueError(f"spacing must be linspace, leading or trailing, got {spacing!r}")
        return torch.from_numpy(steps.astype(np.int64))

    def sampling_sigmas(self, n: int, spacing: Spacing = "linspace") -> torch.Tensor:
        """sigma at the n timesteps, then 0: the (n + 1,) grid a sampler walks, always to the next
        entry (never a fixed stride, the diffusers bug #12633)."""
        return torch.cat([self.sigmas[self.timesteps(n, spacing)], torch.zeros(1, dtype=torch.float64)])


class VESchedule(Schedule):
    """Variance-exploding (Song et al., 2021): sigma(t) = sigma_min (sigma_max / sigma_min)^t, t in [0, 1]."""

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0) -> None:
        self.sigma_min, self.sigma_max = sigma_min, sigma_max

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** _as_tensor(t).double()

    def scale(self, t: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(_as_tensor(t).double())

    def t_of_sigma(self, sigma: torch.Tensor) -> torch.Tensor:
        return (_as_tensor(sigma).double() / self.sigma_min).log() / math.log(self.sigma_max / self.sigma_min)


class EDMSchedule(Schedule):
    """EDM's choice: sigma(t) = t, s(t) = 1."""

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return _as_tensor(t).double()

    def scale(self, t: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(_as_tensor(t).double())

    def t_of_sigma(self, sigma: torch.Tensor) -> torch.Tensor:
        return _as_tensor(sigma).double()


class FlowSchedule(Schedule):
    """Flow matching / rectified flow's straight path x_t = (1 - t) x_0 + t eps, t in [0, 1):
    s = 1 - t, sigma = t / (1 - t), and back t = sigma / (1 + sigma)."""

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        t = _as_tensor(t).double()
        return t / (1 - t)

    def scale(self, t: torch.Tensor) -> torch.Tensor:
        return 1 - _as_tensor(t).double()

    def t_of_sigma(self, sigma: torch.Tensor) -> torch.Tensor:
        sigma = _as_tensor(sigma).double()
        return torch.where(torch.isinf(sigma), torch.ones_like(sigma), sigma / (1 + sigma))


def karras_sigmas(
    n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0
) -> torch.Tensor:
    """EDM's step grid (Eq. 5): sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) -
    sigma_max^(1/rho)))^rho for i = 0..n-1, then 0: (n + 1,), decreasing."""
    if n < 1:
        raise ValueError(f"need n >= 1 steps, got {n}")
    ramp = torch.linspace(0, 1, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)
    inv_rho_max, inv_rho_min = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    sigmas = (inv_rho_max + ramp * (inv_rho_min - inv_rho_max)) ** rho
    return torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)])


FLOW_T_MAX = 0.999
"""Where flow samplers start: t = 1 is sigma = t / (1 - t) = inf, which no sampler can step from."""


def flow_sigmas(n: int, t_max: float = FLOW_T_MAX, t_min: float = 0.0, shift: float = 1.0) -> torch.Tensor:
    """A uniform grid in flow time t from t_max to t_min (n steps, n + 1 points) as sigmas
    t / (1 - t); shift > 1 spends more steps at high noise (t' = shift t / (1 + (shift - 1) t), as
    in SD3). t_max must be below 1 (sigma would be infinite)."""
    if not 0.0 <= t_min < t_max < 1.0:
        raise ValueError(
            f"flow_sigmas needs 0 <= t_min < t_max < 1 (t = 1 is sigma = inf), got {t_min}, {t_max}"
        )
    t = torch.linspace(t_max, t_min, n + 1, dtype=torch.float64)
    t = shift * t / (1 + (shift - 1) * t)
    return FlowSchedule().sigma(t)
