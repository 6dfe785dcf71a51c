import math

import pytest
import torch

from deepzoo.diffusion.schedules import (
    EDMSchedule,
    FlowSchedule,
    VESchedule,
    VPSchedule,
    flow_sigmas,
    karras_sigmas,
)

SCHEDULES = {
    "vp-linear": (VPSchedule("linear"), torch.tensor([0.0, 1.0, 17.0, 500.0, 998.0, 999.0])),
    "vp-cosine": (VPSchedule("cosine"), torch.tensor([0.0, 3.0, 250.5, 999.0])),
    "ve": (VESchedule(), torch.tensor([0.0, 0.3, 0.77, 1.0])),
    "edm": (EDMSchedule(), torch.tensor([0.002, 0.5, 3.0, 80.0])),
    "flow": (FlowSchedule(), torch.tensor([0.001, 0.25, 0.5, 0.9, 0.999])),
}


@pytest.mark.parametrize("name", SCHEDULES)
def test_time_to_sigma_round_trips(name):
    schedule, t = SCHEDULES[name]
    torch.testing.assert_close(schedule.t_of_sigma(schedule.sigma(t)), t.double(), atol=1e-6, rtol=1e-6)


def test_native_forms_equal_the_common_form():
    torch.manual_seed(0)
    x0, eps = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    vp = VPSchedule("linear")
    t = torch.tensor([0, 10, 100, 400, 800, 999])
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)[t][:, None]
    torch.testing.assert_close(vp.noised(x0, eps, t.double()), abar.sqrt() * x0 + (1 - abar).sqrt() * eps)
    tf = torch.linspace(0.05, 0.95, 6, dtype=torch.float64)
    torch.testing.assert_close(FlowSchedule().noised(x0, eps, tf), (1 - tf[:, None]) * x0 + tf[:, None] * eps)
    ve = VESchedule()  # Song et al. (2021)'s CIFAR-10 ends: sigma_min 0.01, sigma_max 50
    sigma = 0.01 * (50.0 / 0.01) ** tf[:, None]
    torch.testing.assert_close(ve.noised(x0, eps, tf), x0 + sigma * eps)
    torch.testing.assert_close(EDMSchedule().noised(x0, eps, tf * 10), x0 + tf[:, None] * 10 * eps)


def test_cosine_schedule_follows_nichol_and_dhariwal():
    vp = VPSchedule("cosine", steps=1000)
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 10, 500, 900):
        assert vp.alpha_bar[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)
    assert vp.betas.max() == vp.betas[-1] == 0.999  # their clip, reached where abar_T -> 0


def test_vp_scale_is_sqrt_alpha_bar():
    vp = VPSchedule()
    t = torch.tensor([0.0, 123.0, 999.0])
    torch.testing.assert_close(vp.scale(t), vp.alpha_bar[t.long()].sqrt())


def test_timestep_spacings_give_the_steps_they_promise():
    vp = VPSchedule(steps=1000)
    for n in (1, 7, 10, 13, 50, 1000):
        linspace = vp.timesteps(n, "linspace")
        assert len(linspace) == n and linspace[0] == 999 and (n == 1 or linspace[-1] == 0)
        leading = vp.timesteps(n, "leading")
        assert len(leading) == n and leading[-1] == 0 and leading[0] == (n - 1) * (1000 // n)
        trailing = vp.timesteps(n, "trailing")
        assert len(trailing) == n and trailing[0] == 999 and trailing[-1] >= 0
        for steps in (linspace, leading, trailing):
            assert (steps[1:] < steps[:-1]).all(), "strictly decreasing, no repeated step"
    # linspace rounds to nearest (832.5 -> 832 and 499.5 -> 500 by round-half-even), never down
    assert vp.timesteps(7, "linspace").tolist() == [999, 832, 666, 500, 333, 166, 0]
    # diffusers' trailing spacing for 13 of 1000 steps, as listed in huggingface/diffusers#9261
    expected = [999, 922, 845, 768, 691, 614, 537, 461, 384, 307, 230, 153, 76]
    assert vp.timesteps(13, "trailing").tolist() == expected
    with pytest.raises(ValueError, match="timesteps"):
        vp.timesteps(1001)


def test_sampling_grid_is_the_timesteps_sigmas_then_zero():
    vp = VPSchedule()
    grid = vp.sampling_sigmas(10, "linspace")
    assert len(grid) == 11 and grid[-1] == 0
    torch.testing.assert_close(grid[:-1], vp.sigmas[vp.timesteps(10, "linspace")])


def test_karras_grid_has_its_ends_and_rho_spacing():
    grid = karras_sigmas(18, 0.002, 80.0, 7.0)
    assert (
        len(grid) == 19 and grid[0].item() == pytest.approx(80.0) and grid[-2].item() == pytest.approx(0.002)
    )
    roots = grid[:-1] ** (1 / 7)
    torch.testing.assert_close(roots.diff(), roots.diff()[:1].expand(17))  # uniform in sigma^(1/rho)


def test_flow_grid_is_uniform_in_t():
    grid = flow_sigmas(8, t_max=0.999)
    t = grid / (1 + grid)
    torch.testing.assert_close(t, torch.linspace(0.999, 0, 9, dtype=torch.float64))


def test_the_default_flow_grid_is_finite_and_t_max_1_is_refused():
    grid = flow_sigmas(4)
    assert torch.isfinite(grid).all() and grid[0].item() == pytest.approx(0.999 / 0.001)
    with pytest.raises(ValueError, match="t_max < 1"):
        flow_sigmas(4, t_max=1.0)


def test_flow_time_of_an_infinite_sigma_is_one():
    """t = sigma / (1 + sigma) is inf / inf = nan at sigma = inf (pure noise, t = 1)."""
    sigma = torch.tensor([0.0, 1.0, math.inf], dtype=torch.float64)
    torch.testing.assert_close(
        FlowSchedule().t_of_sigma(sigma), torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    )


def test_a_one_step_karras_grid_jumps_from_sigma_max_to_zero_and_zero_steps_are_refused():
    torch.testing.assert_close(
        karras_sigmas(1, sigma_max=80.0), torch.tensor([80.0, 0.0], dtype=torch.float64)
    )
    with pytest.raises(ValueError, match="n >= 1"):
        karras_sigmas(0)
