"""Samplers driven by closed-form ideal denoisers: their outputs must follow the target law."""

import math

import pytest
import torch

from deepzoo.diffusion.samplers import (
    SAMPLERS,
    ddim,
    ddpm,
    dpmpp_2m,
    euler,
    guided,
    heun,
    nfe,
    rectified_flow_euler,
    reflow_pairs,
)
from deepzoo.diffusion.schedules import VPSchedule, flow_sigmas, karras_sigmas

MEAN = torch.tensor([1.0, -0.5], dtype=torch.float64)
COV = torch.tensor([[0.5, 0.3], [0.3, 0.4]], dtype=torch.float64)


def gaussian_denoiser(x, sigma):
    """E[x_0 | x_0 + sigma eps = x] for x_0 ~ N(MEAN, COV): MEAN + COV (COV + sigma^2 I)^-1 (x - MEAN)."""
    gain = COV @ torch.linalg.inv(COV + sigma.double() ** 2 * torch.eye(2, dtype=torch.float64))
    return MEAN + (x.double() - MEAN) @ gain.T


MIX_MEANS = torch.tensor([-2.0, 1.0, 3.0], dtype=torch.float64)
MIX_WEIGHTS = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
MIX_STD = 0.2


def mixture_denoiser(x, sigma):
    """1-d mixture of N(m_k, s^2): D = sum_k w_k(x) (m_k + s^2 / (s^2 + sigma^2) (x - m_k)),
    w_k(x) proportional to pi_k N(x; m_k, s^2 + sigma^2)."""
    var = MIX_STD**2 + sigma.double() ** 2
    log_w = MIX_WEIGHTS.log() - 0.5 * (x.double() - MIX_MEANS) ** 2 / var
    w = torch.softmax(log_w, dim=-1)
    return (w * (MIX_MEANS + MIX_STD**2 / var * (x.double() - MIX_MEANS))).sum(-1, keepdim=True)


def _grid(sampler, steps):
    if sampler == "rectified_flow_euler":
        return flow_sigmas(steps, t_max=0.9999)
    return karras_sigmas(steps, 0.002, 80.0)


CASES = [
    ("euler", {}), ("heun", {}), ("heun", {"s_churn": 10.0}), ("ddim", {}), ("ddim", {"eta": 0.5}),
    ("ddpm", {}), ("dpmpp_2m", {}), ("rectified_flow_euler", {}),
]  # fmt: skip


@pytest.mark.parametrize("name,options", CASES)
def test_samplers_reproduce_a_gaussian_mean_and_covariance(name, options):
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(100_000, 2, generator=generator, dtype=torch.float64)
    second_order = name in ("heun", "dpmpp_2m")
    steps = 256 if second_order else 1000  # the first-order ones' bias is linear in the step
    x = SAMPLERS[name](gaussian_denoiser, noise, _grid(name, steps), generator, **options)
    # Monte Carlo standard errors of the mean and of each covariance entry for n samples; 8 of
    # them leave room for the bias of the grid: it starts from N(0, 80^2 I), not N(MEAN, COV +
    # 80^2 I), which leaves an ODE's mean about MEAN sqrt(COV) / 80 off (4 standard errors), and
    # for the discretization. Measured over seeds 0-11, the largest deviation of any sampler:
    # 6.1 standard errors (at 256 steps DDIM with eta 0.5 reached 7.4, and 8 under another seed).
    # The deterministic samplers are held far tighter by the exact-ODE test below.
    n, var = len(x), COV.diag()
    se_mean = (var / n).sqrt()
    se_cov = ((var[:, None] * var[None, :] + COV**2) / n).sqrt()
    assert ((x.mean(0) - MEAN).abs() < 8 * se_mean).all()
    assert ((torch.cov(x.T) - COV).abs() < 8 * se_cov).all()


@pytest.mark.parametrize("name,options", CASES)
def test_samplers_reproduce_mixture_weights(name, options):
    generator = torch.Generator().manual_seed(1)
    noise = torch.randn(20_000, 1, generator=generator, dtype=torch.float64)
    x = SAMPLERS[name](mixture_denoiser, noise, _grid(name, 96), generator, **options)
    component = (x - MIX_MEANS).abs().argmin(dim=1)
    weights = torch.bincount(component, minlength=3).double() / len(x)
    se = (MIX_WEIGHTS * (1 - MIX_WEIGHTS) / len(x)).sqrt()  # binomial standard error of each weight
    assert ((weights - MIX_WEIGHTS).abs() < 7 * se).all()  # measured: at most 5.5 (DDPM)
    within = (x - MIX_MEANS[component, None]).abs().squeeze(1) < 4 * MIX_STD
    assert within.double().mean() > 0.98  # samples land on the components, not between them


def test_error_shrinks_as_steps_grow_at_each_samplers_order():
    """Discretization error alone: each sampler's covariance against a 512-step Heun solve from
    the same noise (so the Monte-Carlo error of 20,000 samples, about 0.01, cancels). Halving the
    step halves Euler's error (first order) and divides Heun's and DPM-Solver++(2M)'s by about 4
    (second order). Measured for noise seeds 2-7: Euler 16 -> 32 steps 1.89-1.90x, Heun 4.7x,
    DPM++ 2M 4.96x, the same to 3 digits for every seed."""
    noise = torch.randn(20_000, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    reference = torch.cov(heun(gaussian_denoiser, noise, karras_sigmas(512)).T)

    def covariance_error(sampler, steps):
        x = sampler(gaussian_denoiser, noise, karras_sigmas(steps))
        return (torch.cov(x.T) - reference).abs().max().item()

    for sampler, order in ((euler, 1), (heun, 2), (dpmpp_2m, 2)):
        errors = [covariance_error(sampler, n) for n in (8, 16, 32)]
        assert errors[0] > errors[1] > errors[2]
        ratio = errors[1] / errors[2]
        assert 0.8 * 2**order < ratio < 1.4 * 2**order, (sampler.__name__, ratio)


def test_ddim_eta_zero_is_the_euler_step_of_the_probability_flow_ode():
    noise = torch.randn(100, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for sigmas in (karras_sigmas(10), VPSchedule().sampling_sigmas(10, "trailing")):
        torch.testing.assert_close(
            ddim(gaussian_denoiser, noise, sigmas), euler(gaussian_denoiser, noise, sigmas)
        )


def test_rectified_flow_euler_equals_euler_on_the_same_grid():
    noise = torch.randn(100, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    sigmas = flow_sigmas(6, t_max=0.999)
    torch.testing.assert_close(
        rectified_flow_euler(gaussian_denoiser, noise, sigmas), euler(gaussian_denoiser, noise, sigmas)
    )


def test_ancestral_step_equals_the_ddpm_update():
    """x_{t-1} = (x_t - beta_t / sqrt(1 - abar_t) eps_hat) / sqrt(alpha_t) + sqrt(beta_tilde_t) z,
    beta_tilde_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t, on the VP state x_t = sqrt(abar_t) x_hat."""
    vp = VPSchedule()
    t = 500
    sigmas = torch.tensor([vp.sigmas[t].item(), vp.sigmas[t - 1].item(), 0.0], dtype=torch.float64)
    noise = torch.randn(50, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    seen = []

    def recording(x, sigma):
        seen.append(x.clone())
        return gaussian_denoiser(x, sigma)

    ddpm(recording, noise, sigmas, torch.Generator().manual_seed(6))
    x_hat = noise * sigmas[0]
    abar, abar_prev, beta = vp.alpha_bar[t], vp.alpha_bar[t - 1], vp.betas[t]
    x_t = abar.sqrt() * x_hat
    eps_hat = (x_hat - gaussian_denoiser(x_hat, sigmas[0])) / sigmas[0]
    z = torch.randn(50, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    beta_tilde = (1 - abar_prev) / (1 - abar) * beta
    expected = (x_t - beta / (1 - abar).sqrt() * eps_hat) / (1 - beta).sqrt() + beta_tilde.sqrt() * z
    torch.testing.assert_close(abar_prev.sqrt() * seen[1], expected)


@pytest.mark.parametrize("s_tmin, s_churn", [(0.0, 0.2), (100.0, 0.2), (0.0, 10.0)])
def test_heun_churn_raises_sigma_by_gamma_with_fresh_noise_inside_its_range(s_tmin, s_churn):
    """EDM Algorithm 2, lines 4-6: gamma = min(S_churn / N, sqrt 2 - 1) when S_tmin <= sigma_i <=
    S_tmax, sigma_hat = (1 + gamma) sigma_i and x_hat = x_i + sqrt(sigma_hat^2 - sigma_i^2) S_noise
    z; the first network call sees (x_hat, sigma_hat). Outside [S_tmin, S_tmax], gamma = 0; S_churn = 10
    over N = 2 steps is capped at sqrt 2 - 1 (at most doubling the variance)."""
    sigmas = torch.tensor([10.0, 2.0, 0.0], dtype=torch.float64)  # N = 2 steps
    noise = torch.randn(64, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    seen = []

    def recording(x, sigma):
        seen.append((x.clone(), sigma.item()))
        return gaussian_denoiser(x, sigma)

    heun(
        recording,
        noise,
        sigmas,
        torch.Generator().manual_seed(2),
        s_churn=s_churn,
        s_tmin=s_tmin,
        s_noise=0.9,
    )
    gamma = min(s_churn / 2, math.sqrt(2) - 1) if s_tmin <= 10.0 else 0.0
    sigma_hat = 10.0 * (1 + gamma)
    z = torch.randn(64, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    expected = noise * 10.0 + math.sqrt(sigma_hat**2 - 10.0**2) * 0.9 * z
    assert seen[0][1] == pytest.approx(sigma_hat, rel=1e-12)
    torch.testing.assert_close(seen[0][0], expected, rtol=1e-12, atol=1e-12)


def test_each_step_goes_to_the_next_grid_entry_whatever_the_spacing():
    vp = VPSchedule()
    for spacing in ("linspace", "leading", "trailing"):
        sigmas = vp.sampling_sigmas(7, spacing)
        for sampler in (ddim, ddpm, euler):
            seen = []
            sampler(lambda x, s: seen.append(s.item()) or x * 0, torch.zeros(1, 1), sigmas)  # noqa: B023
            assert seen == pytest.approx(sigmas[:-1].tolist())


def test_network_evaluations():
    calls = []
    counting = lambda x, s: calls.append(1) or gaussian_denoiser(x, s)  # noqa: E731
    for name in SAMPLERS:
        calls.clear()
        SAMPLERS[name](counting, torch.zeros(3, 2, dtype=torch.float64), karras_sigmas(8))
        assert len(calls) == nfe(name, 8), name


def test_bad_grids_are_clear_errors():
    for bad in (torch.tensor([1.0, 2.0, 0.0]), torch.tensor([5.0, 1.0]), torch.tensor([math.inf, 1.0, 0.0])):
        with pytest.raises(ValueError, match="sigmas"):
            heun(gaussian_denoiser, torch.zeros(1, 2), bad)


def test_guidance_scale_zero_and_one_are_the_unconditional_and_conditional_predictions():
    def denoise(x, sigma, labels):
        return x * 0 + labels[:, None].double()

    labels, null = torch.tensor([3, 5]), 10
    x, sigma = torch.zeros(2, 1, dtype=torch.float64), torch.tensor(1.0)
    assert guided(denoise, labels, null, 1.0)(x, sigma).squeeze(1).tolist() == [3, 5]
    assert guided(denoise, labels, null, 0.0)(x, sigma).squeeze(1).tolist() == [10, 10]
    # w = 2: D(null) + 2 (D(y) - D(null))
    assert guided(denoise, labels, null, 2.0)(x, sigma).squeeze(1).tolist() == [-4, 0]


def _exact_flow(noise: torch.Tensor, sigma_max: float) -> torch.Tensor:
    """The probability-flow ODE's exact solution at sigma = 0 for x_0 ~ N(MEAN, COV): with
    A(sigma) = COV + sigma^2 I (all A commute), x(0) - MEAN = A(0)^1/2 A(sigma_max)^-1/2 (x_T - MEAN),
    x_T = sigma_max * noise."""
    values, vectors = torch.linalg.eigh(COV)
    gain = vectors @ torch.diag((values / (values + sigma_max**2)).sqrt()) @ vectors.T
    return MEAN + (sigma_max * noise - MEAN) @ gain.T


@pytest.mark.parametrize("name,order", [("euler", 1), ("ddim", 1), ("heun", 2), ("dpmpp_2m", 2)])
def test_deterministic_samplers_converge_to_the_exact_ode_solution_at_their_order(name, order):
    """Sample by sample against the exact solution, so no Monte Carlo error: doubling the steps
    divides the error by about 2^order (a wrong coefficient, e.g. in DPM-Solver++'s ratio,
    drops the order)."""
    noise = torch.randn(1000, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    exact = _exact_flow(noise, 80.0)
    errors = []
    for steps in (16, 32, 64):
        x = SAMPLERS[name](gaussian_denoiser, noise, karras_sigmas(steps, 0.002, 80.0))
        errors.append((x - exact).abs().max().item())
    rates = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    assert min(rates) > order - 0.35, (errors, rates)


def test_reflow_pairs_come_from_a_deterministic_sampler_only():
    """Reflow's couplings (noise, ODE(noise)) must be a function of the noise: the ancestral ddpm
    and ddim (stochastic for eta > 0) are refused by name."""
    noise = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sigmas = karras_sigmas(6)
    for name in ("euler", "heun", "dpmpp_2m"):
        pair = reflow_pairs(gaussian_denoiser, noise, sigmas, sampler=name)
        assert pair[0] is noise and torch.equal(pair[1], SAMPLERS[name](gaussian_denoiser, noise, sigmas))
    for name in ("ddpm", "ddim"):
        with pytest.raises(ValueError, match="deterministic sampler"):
            reflow_pairs(gaussian_denoiser, noise, sigmas, sampler=name)
