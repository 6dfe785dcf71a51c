"""Our DDPM and DDIM against Hugging Face diffusers' schedulers, the reference most users know.

diffusers steps the VP state x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps with an epsilon
prediction; ours steps x_hat = x_t / sqrt(abar_t) with a denoiser D. Given the same ideal
denoiser (Gaussian data, as in test_samplers.py), the same grid and the same noise, both must
end at the same x_0. diffusers goes from t to t - T // n whatever the grid; on the grids where
that is the next grid entry (n divides T; leading or trailing spacing) the trajectories agree.

diffusers' EDM, Heun and flow-matching schedulers step our own state (x_hat, or the flow state
x_t = (1 - t) x_0 + t eps); there we hand them our grid and compare Euler, Heun, DPM-Solver++(2M)
and rectified-flow Euler step for step. Where a scheduler computes in float32 (it casts the
sample, or its grid), the tolerance is float32 rounding: 2^-24 relative per rounding.
"""

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EDMDPMSolverMultistepScheduler,
    EDMEulerScheduler,
    FlowMatchEulerDiscreteScheduler,
    HeunDiscreteScheduler,
)

from deepzoo.diffusion.samplers import ddim, ddpm, dpmpp_2m, euler, heun, rectified_flow_euler
from deepzoo.diffusion.schedules import VPSchedule, flow_sigmas, karras_sigmas
from deepzoo.rng import randn
from tests.diffusion.test_samplers import gaussian_denoiser

FLOAT32 = 2.0**-24
"""Relative rounding error of one float32 operation (half an ulp)."""

LINEAR = {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02, "beta_schedule": "linear"}


def _epsilon_model(vp: VPSchedule):
    """diffusers' model: eps_hat(x_t, t) = (x_hat - D(x_hat, sigma_t)) / sigma_t with
    x_hat = x_t / sqrt(abar_t)."""

    def model(x_t: torch.Tensor, t: int) -> torch.Tensor:
        sigma = vp.sigmas[t]
        x_hat = x_t / vp.alpha_bar[t].sqrt()
        return (x_hat - gaussian_denoiser(x_hat, sigma)) / sigma

    return model


def _run(scheduler, vp: VPSchedule, noise: torch.Tensor, n: int, draws=None, **step):
    """diffusers' sampling loop from x_T = sqrt(1 - abar_T) noise (our x_hat = sigma_T noise);
    with `draws` (a generator) each step is handed its N(0, I) noise explicitly."""
    scheduler.set_timesteps(n)
    scheduler.alphas_cumprod = vp.alpha_bar.clone()  # float64, as ours (its own float32: tested below)
    model, timesteps = _epsilon_model(vp), [int(t) for t in scheduler.timesteps]
    x = (1 - vp.alpha_bar[timesteps[0]]).sqrt() * noise
    for t in timesteps:
        if draws is not None:
            step["variance_noise"] = randn(x.shape, draws, x.device, x.dtype)
        x = scheduler.step(model(x, t), t, x, **step).prev_sample
    return x, timesteps


@pytest.mark.parametrize(("kind", "theirs"), [("linear", "linear"), ("cosine", "squaredcos_cap_v2")])
def test_the_schedules_are_diffusers(kind, theirs):
    """Ho et al.'s betas linear in [1e-4, 0.02]; Nichol and Dhariwal's cosine abar with betas
    capped at 0.999. diffusers keeps them in float32: betas to 1e-7, abar to 3e-5 relative."""
    reference = DDPMScheduler(num_train_timesteps=1000, beta_schedule=theirs)
    vp = VPSchedule(kind)
    torch.testing.assert_close(vp.betas, reference.betas.double(), rtol=0, atol=1e-7)
    torch.testing.assert_close(vp.alpha_bar, reference.alphas_cumprod.double(), rtol=3e-5, atol=0)


@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
def test_every_timestep_grid_is_diffusers(spacing):
    """n = 1..1000 of T = 1000, value for value (ties in exact arithmetic included). Deliberate
    differences: one linspace step starts at T-1 (pure noise), not 0; where np.arange's
    floating-point length gives diffusers' trailing grid an (n+1)-th timestep, -1, ours stops at n."""
    vp, scheduler = VPSchedule(), DDIMScheduler(**LINEAR, timestep_spacing=spacing)
    for n in range(1, 1001):
        scheduler.set_timesteps(n)
        theirs, ours = scheduler.timesteps.tolist(), vp.timesteps(n, spacing).tolist()
        if spacing == "linspace" and n == 1:
            assert (theirs, ours) == ([0], [999])
            continue
        if len(theirs) == n + 1:
            assert spacing == "trailing" and theirs[-1] == -1, n
            theirs = theirs[:n]
        assert ours == theirs, n


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
@pytest.mark.parametrize("n", [10, 50])
def test_deterministic_ddim_is_diffusers_ddim(spacing, n):
    vp = VPSchedule()
    noise = torch.randn(200, 2, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    scheduler = DDIMScheduler(**LINEAR, clip_sample=False, set_alpha_to_one=True, timestep_spacing=spacing)
    reference, timesteps = _run(scheduler, vp, noise, n, eta=0.0)
    assert timesteps == vp.timesteps(n, spacing).tolist()
    ours = ddim(gaussian_denoiser, noise, vp.sampling_sigmas(n, spacing))
    torch.testing.assert_close(ours, reference, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_ancestral_ddpm_is_diffusers_ddpm_and_ddim_with_eta_one_given_the_same_noise(spacing):
    """DDPMScheduler (posterior mean, variance beta_tilde) and DDIMScheduler(eta = 1) draw one
    N(0, I) per step from the generator; ours draws the same numbers in the same order, each
    scaled by c = sigma' sqrt(1 - sigma'^2 / sigma^2), i.e. sqrt(beta_tilde) / sqrt(abar_{t-1})."""
    vp, n = VPSchedule(), 20
    noise = torch.randn(200, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ours = ddpm(gaussian_denoiser, noise, vp.sampling_sigmas(n, spacing), torch.Generator().manual_seed(2))
    posterior = DDPMScheduler(
        **LINEAR, clip_sample=False, variance_type="fixed_small", timestep_spacing=spacing
    )
    reference, _ = _run(posterior, vp, noise, n, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(ours, reference, rtol=1e-9, atol=1e-9)
    scheduler = DDIMScheduler(**LINEAR, clip_sample=False, set_alpha_to_one=True, timestep_spacing=spacing)
    explicit, _ = _run(scheduler, vp, noise, n, draws=torch.Generator().manual_seed(2), eta=1.0)
    torch.testing.assert_close(ours, explicit, rtol=1e-9, atol=1e-9)


def _noise(seed: int) -> torch.Tensor:
    return torch.randn(500, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _step_through(scheduler, x: torch.Tensor, step) -> torch.Tensor:
    """diffusers' loop, the model evaluated at the scheduler's current sigma:
    x <- step(x, t, sigma) for each of its timesteps."""
    scheduler.set_begin_index(0)
    for t in scheduler.timesteps:
        x = step(x, t, scheduler.sigmas[scheduler.step_index or 0])
    return x


@pytest.mark.parametrize("n", [1, 2, 3, 18, 40, 100])
def test_karras_grid_is_diffusers_edm_grid(n):
    """EDM's Eq. 5 (sigma_min 0.002, sigma_max 80, rho 7, then 0): diffusers computes it in float64
    and rounds it to float32, so the two differ by at most one float32 rounding."""
    scheduler = EDMEulerScheduler()
    scheduler.set_timesteps(n)
    ours = karras_sigmas(n)
    assert scheduler.sigmas.shape == ours.shape and scheduler.sigmas[-1] == 0
    torch.testing.assert_close(scheduler.sigmas.double(), ours, rtol=FLOAT32, atol=0)


@pytest.mark.parametrize("n", [5, 18, 40])
def test_euler_is_diffusers_edm_euler(n):
    """EDMEulerScheduler given our denoiser's x_0 (its pred_original_sample) on its own Karras grid.
    It steps in float32: each step rounds the state, |x_i| <= sigma_i |z|, and the flow carries
    that error to sigma = 0 scaled by about 1 / sigma_i, so at most a few roundings of |z| per step."""
    noise, scheduler = _noise(n), EDMEulerScheduler()
    scheduler.set_timesteps(n)
    scheduler.is_scale_input_called = True  # the denoiser takes x_hat itself, no c_in

    def step(x, t, sigma):
        denoised = gaussian_denoiser(x, sigma.double()).float()
        return scheduler.step(torch.zeros_like(x), t, x, pred_original_sample=denoised).prev_sample

    reference = _step_through(scheduler, (noise * scheduler.sigmas[0]).float(), step)
    ours = euler(gaussian_denoiser, noise.float(), karras_sigmas(n))
    tolerance = 4 * n * FLOAT32 * noise.abs().max().item()
    torch.testing.assert_close(ours, reference, rtol=0, atol=tolerance)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # theirs, numpy 2
@pytest.mark.parametrize("n", [5, 18, 40])
def test_heun_is_diffusers_heun(n):
    """HeunDiscreteScheduler (k-diffusion's Heun: the Euler predictor, then the average of the two
    slopes; Euler on the last step to 0) with a sample prediction, on our grid: float64 throughout,
    the same operations, so equal to float64 rounding."""
    noise, grid = _noise(n), karras_sigmas(n)
    scheduler = HeunDiscreteScheduler(prediction_type="sample")
    scheduler.set_timesteps(n)
    scheduler.sigmas = torch.cat([grid[:1], grid[1:-1].repeat_interleave(2), grid[-1:]])

    def step(x, t, sigma):
        return scheduler.step(gaussian_denoiser(x, sigma), t, x).prev_sample

    reference = _step_through(scheduler, noise * grid[0], step)
    torch.testing.assert_close(heun(gaussian_denoiser, noise, grid), reference, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n", [5, 18, 40])
def test_dpmpp_2m_is_diffusers_edm_dpm_solver(n):
    """EDMDPMSolverMultistepScheduler (dpmsolver++, order 2, midpoint, first order on the first and
    last steps) on our float64 grid. Its model is EDM-preconditioned, D = c_skip x + c_out F; we
    hand it F = (D - c_skip x) / c_out with sigma_data = 0.5."""
    noise, grid = _noise(n), karras_sigmas(n)
    scheduler = EDMDPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2)
    scheduler.set_timesteps(n)
    scheduler.sigmas = grid.clone()

    def step(x, t, sigma):
        c_skip, c_out = 0.25 / (sigma**2 + 0.25), sigma * 0.5 / (sigma**2 + 0.25).sqrt()
        return scheduler.step((gaussian_denoiser(x, sigma) - c_skip * x) / c_out, t, x).prev_sample

    reference = _step_through(scheduler, noise * grid[0], step)
    ours = dpmpp_2m(gaussian_denoiser, noise, grid)
    torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("n", "shift"), [(5, 1.0), (20, 3.0)])
def test_flow_grid_and_euler_are_diffusers_flow_matching(n, shift):
    """FlowMatchEulerDiscreteScheduler given our uniform times t_max..0 shifts them as SD3 does,
    t' = shift t / (1 + (shift - 1) t), in float32 (t <= 1: a few roundings); its Euler step on the
    velocity u = (x_t - D) / t, in float32, equals ours on the flow state."""
    noise, grid = _noise(n), flow_sigmas(n, shift=shift)
    times = grid / (1 + grid)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(sigmas=torch.linspace(0.999, 0, n + 1, dtype=torch.float64)[:-1].tolist())
    torch.testing.assert_close(scheduler.sigmas.double(), times, rtol=0, atol=4 * FLOAT32)
    scheduler.sigmas = times.clone()

    def step(x, timestep, t):
        velocity = (x - gaussian_denoiser(x / (1 - t), t / (1 - t))) / t
        return scheduler.step(velocity, timestep, x).prev_sample

    reference = _step_through(scheduler, noise * times[0], step)
    ours = rectified_flow_euler(gaussian_denoiser, noise, grid)
    torch.testing.assert_close(ours, reference, rtol=0, atol=4 * n * FLOAT32 * noise.abs().max().item())


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # theirs, numpy 2
@pytest.mark.parametrize(("n", "grid"), [(10, "trailing"), (20, "trailing"), (10, "karras"), (25, "karras")])
def test_dpmpp_2m_is_diffusers_dpm_solver_on_the_vp_process(n, grid):
    """DPMSolverMultistepScheduler (dpmsolver++, order 2, epsilon model, final sigma 0), the VP
    sampler most pipelines use, steps x_t = alpha x_hat with alpha = 1 / sqrt(1 + sigma^2) and
    lambda = log(alpha / sigma_t) = -log sigma: the same exponential integrator as ours in x_hat.
    Its grid (trailing timesteps, or Karras' formula between the schedule's first and last sigma:
    "DPM++ 2M Karras") is ours computed from its float32 abar, to float32 rounding; the
    sampler runs on our float64 grid, and steps in float32."""
    vp, noise = VPSchedule(), _noise(n)
    scheduler = DPMSolverMultistepScheduler(
        **LINEAR, use_karras_sigmas=grid == "karras", timestep_spacing="trailing", final_sigmas_type="zero"
    )
    scheduler.set_timesteps(n)
    abar = scheduler.alphas_cumprod.double()  # theirs, float32 (equal to ours to 3e-5: see above)
    table = ((1 - abar) / abar).sqrt()
    if grid == "karras":
        expected = karras_sigmas(n, table[0].item(), table[-1].item())
        ours = karras_sigmas(n, vp.sigmas[0].item(), vp.sigmas[-1].item())
    else:
        steps = vp.timesteps(n, "trailing")
        expected = torch.cat([table[steps], torch.zeros(1, dtype=torch.float64)])
        ours = vp.sampling_sigmas(n, "trailing")
    torch.testing.assert_close(scheduler.sigmas.double(), expected, rtol=4 * FLOAT32, atol=0)
    scheduler.sigmas = ours.clone()

    def step(x, t, sigma):
        alpha = 1 / (1 + sigma**2).sqrt()
        x_hat = x.double() / alpha
        epsilon = (x_hat - gaussian_denoiser(x_hat, sigma)) / sigma
        return scheduler.step(epsilon.float(), t, x).prev_sample

    start = (noise * ours[0] / (1 + ours[0] ** 2).sqrt()).float()
    reference = _step_through(scheduler, start, step).double()
    tolerance = 4 * n * FLOAT32 * noise.abs().max().item()
    torch.testing.assert_close(dpmpp_2m(gaussian_denoiser, noise, ours), reference, rtol=0, atol=tolerance)
