"""Our DDPM and DDIM against Hugging Face diffusers' schedulers, the reference most users know.

diffusers steps the VP state x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps with an epsilon
prediction; ours steps x_hat = x_t / sqrt(abar_t) with a denoiser D. Given the same ideal
denoiser (Gaussian data, as in test_samplers.py), the same grid and the same noise, both must
end at the same x_0. diffusers goes from t to t - T // n whatever the grid; on the grids where
that is the next grid entry (n divides T; leading or trailing spacing) the trajectories agree.
"""

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from deepzoo.diffusion.samplers import ddim, ddpm
from deepzoo.diffusion.schedules import VPSchedule
from deepzoo.rng import randn
from tests.diffusion.test_samplers import gaussian_denoiser

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
