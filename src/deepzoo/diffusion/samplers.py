"""Samplers on the common state x_hat = x_t / s(t) = x_0 + sigma eps (EDM, Karras et al., 2022).

One signature: sampler(denoise, noise, sigmas, ...) -> x_0, where denoise(x_hat, sigma) -> D (the
denoiser, sigma a 0-d tensor), noise ~ N(0, I) and sigmas is a decreasing grid ending at 0
(schedules.py builds them). Each step goes from sigmas[i] to sigmas[i + 1], whatever the spacing.
The probability-flow ODE is dx/dsigma = (x - D(x; sigma)) / sigma.

    euler       x <- x + (sigma' - sigma) (x - D) / sigma                     (= DDIM, eta = 0)
    heun        EDM Algorithm 2 (second order; optional churn S_churn, S_tmin, S_tmax, S_noise)
    ddim        x <- D + sqrt(sigma'^2 - c^2) (x - D) / sigma + c z,
                c = eta sigma' sqrt(1 - sigma'^2 / sigma^2)
    ddpm        ancestral: DDIM with eta = 1, the posterior q(x_{t-1} | x_t, x_0 = D)
    dpmpp_2m    DPM-Solver++(2M) (Lu et al., 2022) in log-sigma time
    rectified_flow_euler   x_t <- x_t + (t' - t) u on the flow state x_t = (1 - t) x_0 + t eps

Network evaluations (NFE): n for a grid of n steps, 2n - 1 for heun.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from deepzoo.rng import randn

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _randn(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return randn(like.shape, generator, like.device, like.dtype)


def _check(sigmas: torch.Tensor) -> torch.Tensor:
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64)
    if sigmas.ndim != 1 or len(sigmas) < 2 or sigmas[-1] != 0 or (sigmas[1:] >= sigmas[:-1]).any():
        raise ValueError("sigmas must be a decreasing 1-d grid of at least 2 values ending at 0")
    if not torch.isfinite(sigmas).all():
        raise ValueError("sigmas must be finite (start flows at t_max < 1)")
    return sigmas


def nfe(sampler: str, steps: int) -> int:
    """Network evaluations of `sampler` on a grid of `steps` steps."""
    return 2 * steps - 1 if sampler == "heun" else steps


@torch.no_grad()
def euler(denoise: Denoise, noise: torch.Tensor, sigmas: torch.Tensor, generator=None) -> torch.Tensor:
    """x + (sigma' - sigma) (x - D) / sigma, computed as D + (sigma' / sigma) (x - D), one lerp."""
    sigmas = _check(sigmas)
    values = sigmas.tolist()
    x = noise * values[0]
    for i, sigma in enumerate(sigmas[:-1].unbind()):
        x = torch.lerp(denoise(x, sigma).to(x.dtype), x, values[i + 1] / values[i])
    return x


@torch.no_grad()
def heun(
    denoise: Denoise,
    noise: torch.Tensor,
    sigmas: torch.Tensor,
    generator: torch.Generator | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """EDM's Algorithm 2: with s_churn > 0, noise is first added to raise sigma_i to
    sigma_hat = sigma_i (1 + gamma), gamma = min(s_churn / n, sqrt 2 - 1) inside [s_tmin, s_tmax]."""
    sigmas = _check(sigmas)
    n = len(sigmas) - 1
    x = noise * sigmas[0].item()
    for sigma, sigma_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        gamma = min(s_churn / n, math.sqrt(2) - 1) if s_tmin <= sigma <= s_tmax else 0.0
        sigma_hat = sigma * (1 + gamma)
        if gamma > 0:
            x = x + math.sqrt(sigma_hat**2 - sigma**2) * s_noise * _randn(x, generator)
        d = (x - denoise(x, torch.tensor(sigma_hat, dtype=torch.float64))) / sigma_hat
        x_next = x + (sigma_next - sigma_hat) * d
        if sigma_next > 0:
            d_next = (x_next - denoise(x_next, torch.tensor(sigma_next, dtype=torch.float64))) / sigma_next
            x_next = x + (sigma_next - sigma_hat) * (d + d_next) / 2
        x = x_next
    return x


@torch.no_grad()
def ddim(
    denoise: Denoise, noise: torch.Tensor, sigmas: torch.Tensor, generator=None, eta: float = 0.0
) -> torch.Tensor:
    """Song et al. (2021) in sigma form: eta = 0 deterministic (the Euler step), eta = 1 DDPM.
    x' = D + sqrt(sigma'^2 - c^2) eps_hat + c z with eps_hat = (x - D) / sigma, i.e.
    lerp(D, x, sqrt(sigma'^2 - c^2) / sigma) + c z."""
    sigmas = _check(sigmas)
    values = sigmas.tolist()
    x = noise * values[0]
    for i, sigma in enumerate(sigmas[:-1].unbind()):
        s, s_next = values[i], values[i + 1]
        c = eta * s_next * math.sqrt(max(0.0, 1 - s_next**2 / s**2))
        x = torch.lerp(denoise(x, sigma).to(x.dtype), x, math.sqrt(max(0.0, s_next**2 - c**2)) / s)
        if c > 0:
            x = x + c * _randn(x, generator)
    return x


def ddpm(denoise: Denoise, noise: torch.Tensor, sigmas: torch.Tensor, generator=None) -> torch.Tensor:
    """Ho et al. (2020)'s ancestral sampler: x_{t-1} ~ q(x_{t-1} | x_t, x_0 = D(x_t)), with variance
    beta_tilde; in sigma form, DDIM with eta = 1."""
    return ddim(denoise, noise, sigmas, generator, eta=1.0)


@torch.no_grad()
def dpmpp_2m(denoise: Denoise, noise: torch.Tensor, sigmas: torch.Tensor, generator=None) -> torch.Tensor:
    """DPM-Solver++(2M): with lambda = -ln sigma and h = lambda' - lambda,
    x' = (sigma'/sigma) x - expm1(-h) D~, where D~ = (1 + 1/(2r)) D_i - 1/(2r) D_{i-1}, r = h_{i-1}/h
    (D~ = D_i on the first and the last step)."""
    sigmas = _check(sigmas)
    x = noise * sigmas[0].item()
    previous, h_last = None, None
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        denoised = denoise(x, sigma)
        if sigma_next == 0:
            x = denoised
            break
        h = (sigma.log() - sigma_next.log()).item()
        if previous is None:
            estimate = denoised
        else:
            r = h_last / h
            estimate = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * previous
        x = (sigma_next / sigma).item() * x - math.expm1(-h) * estimate
        previous, h_last = denoised, h
    return x


@torch.no_grad()
def rectified_flow_euler(
    denoise: Denoise, noise: torch.Tensor, sigmas: torch.Tensor, generator=None
) -> torch.Tensor:
    """Euler on the flow state x_t = (1 - t) x_0 + t eps, t = sigma / (1 + sigma), with velocity
    u = (x_t - D) / t: x_t' = x_t + (t' - t) u = lerp(D, x_t, t' / t); starts at x_{t_0} = t_0 noise.
    Equal to `euler` on the same grid (x_t = (1 - t) x_hat), which skips the rescaling."""
    sigmas = _check(sigmas)
    ts = (sigmas / (1 + sigmas)).tolist()
    x = noise * ts[0]
    for i, sigma in enumerate(sigmas[:-1].unbind()):
        t = ts[i]
        x = torch.lerp(denoise(x * (1 / (1 - t)), sigma).to(x.dtype), x, ts[i + 1] / t)
    return x


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "euler": euler,
    "heun": heun,
    "ddim": ddim,
    "ddpm": ddpm,
    "dpmpp_2m": dpmpp_2m,
    "rectified_flow_euler": rectified_flow_euler,
}


def guided(denoise_conditional: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
           labels: torch.Tensor, null_label: int, scale: float) -> Denoise:  # fmt: skip
    """Classifier-free guidance (Ho & Salimans, 2022): D_w = D(x | null) + w (D(x | y) - D(x | null));
    w = 1 is the conditional denoiser, w = 0 the unconditional one. Both halves run as one batch."""
    if scale == 1.0:
        return lambda x, sigma: denoise_conditional(x, sigma, labels)
    null = torch.full_like(labels, null_label)
    if scale == 0.0:
        return lambda x, sigma: denoise_conditional(x, sigma, null)

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        both = denoise_conditional(torch.cat([x, x]), sigma, torch.cat([labels, null]))
        conditional, unconditional = both.chunk(2)
        return unconditional + scale * (conditional - unconditional)

    return denoise


@torch.no_grad()
def reflow_pairs(
    denoise: Denoise, noise: torch.Tensor, sigmas: torch.Tensor, sampler: str = "heun"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(noise, sample) couplings drawn with a deterministic ODE sampler from a trained flow, the
    data of reflow (Liu et al., 2023): retraining on them straightens the paths."""
    if sampler not in ("euler", "heun", "dpmpp_2m", "rectified_flow_euler"):
        raise ValueError(f"reflow needs a deterministic sampler, got {sampler!r}")
    return noise, SAMPLERS[sampler](denoise, noise, sigmas)
