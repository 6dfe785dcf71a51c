import math

import pytest
import torch

from deepzoo.diffusion.losses import (
    DDPMLoss,
    EDMLoss,
    FlowMatchingLoss,
    ScoreMatchingLoss,
    weighted_denoising_loss,
)
from deepzoo.diffusion.preconditioning import Denoiser, Preconditioning
from deepzoo.diffusion.schedules import FlowSchedule, VPSchedule

KINDS = ["epsilon", "x0", "v", "edm", "velocity", "score"]


class Oracle(torch.nn.Module):
    """A network that outputs the exact target for the (x0, eps) it was given, plus `offset`."""

    def __init__(self, precond, x0, eps, sigma, offset=0.0):
        super().__init__()
        self.precond, self.x0, self.eps, self.sigma, self.offset = precond, x0, eps, sigma, offset

    def forward(self, x_in, c_noise, labels=None):
        c_skip, c_out, c_in = (c.reshape(-1, 1) for c in self.precond.coefficients(self.sigma))
        x_hat = self.x0 + self.sigma.reshape(-1, 1) * self.eps
        torch.testing.assert_close(
            x_in.double(), (c_in * x_hat).to(x_in.dtype).double()
        )  # D's input is c_in x_hat
        return ((self.x0 - c_skip * x_hat) / c_out + self.offset).float()


def _setup(kind, sigma_data=0.5):
    torch.manual_seed(0)
    x0, eps = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    sigma = torch.tensor([0.01, 0.3, 1.0, 5.0, 50.0], dtype=torch.float64)
    return Preconditioning(kind, sigma_data), x0, eps, sigma


@pytest.mark.parametrize("kind", KINDS)
def test_denoiser_with_the_ideal_target_returns_x0_and_the_loss_is_zero(kind):
    precond, x0, eps, sigma = _setup(kind)
    denoiser = Denoiser(Oracle(precond, x0, eps, sigma), precond)
    torch.testing.assert_close(denoiser(x0 + sigma[:, None] * eps, sigma).double(), x0, atol=1e-4, rtol=1e-4)
    loss = weighted_denoising_loss(denoiser, x0.float(), sigma, torch.ones(5), eps=eps.float())
    assert loss.abs().max().item() < 1e-6


@pytest.mark.parametrize("kind", KINDS)
def test_loss_has_the_stated_weighting(kind):
    """An error delta in F is an error c_out delta in D: loss = lambda c_out^2 delta^2."""
    precond, x0, eps, sigma = _setup(kind)
    denoiser = Denoiser(Oracle(precond, x0, eps, sigma, offset=0.1), precond)
    weight = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64)
    loss = weighted_denoising_loss(denoiser, x0.float(), sigma, weight, eps=eps.float())
    _, c_out, _ = precond.coefficients(sigma)
    torch.testing.assert_close(loss.double(), weight * c_out.square() * 0.01, rtol=1e-4, atol=1e-9)


def test_ddpm_loss_is_the_epsilon_mse_and_flow_loss_the_velocity_mse():
    torch.manual_seed(0)
    x0, eps = torch.randn(4, 6), torch.randn(4, 6)
    net = lambda x, c, labels=None: torch.tanh(x) * 0.3  # noqa: E731 (any network)

    vp = VPSchedule()
    eps_denoiser = Denoiser(net, Preconditioning("epsilon"), vp)
    sigma = vp.sigmas[torch.tensor([3, 100, 500, 999])]
    loss = weighted_denoising_loss(eps_denoiser, x0, sigma, DDPMLoss.weight(sigma), eps=eps)
    x_t = vp.noised(x0.double(), eps.double(), vp.t_of_sigma(sigma)).float()
    torch.testing.assert_close(loss, (net(x_t, None) - eps).square().mean(1), rtol=1e-4, atol=1e-6)

    flow = Denoiser(net, Preconditioning("velocity"), FlowSchedule())
    t = torch.tensor([0.1, 0.4, 0.7, 0.95], dtype=torch.float64)
    sigma = t / (1 - t)
    loss = weighted_denoising_loss(flow, x0, sigma, FlowMatchingLoss.weight(sigma), eps=eps)
    x_t = ((1 - t[:, None]) * x0 + t[:, None] * eps).float()
    torch.testing.assert_close(loss, (net(x_t, None) - (eps - x0)).square().mean(1), rtol=1e-4, atol=1e-6)


def test_edm_weighting_makes_the_effective_weight_one():
    sigma = torch.logspace(-2, 2, 9, dtype=torch.float64)
    _, c_out, _ = Preconditioning("edm", 0.5).coefficients(sigma)
    torch.testing.assert_close(
        EDMLoss(sigma_data=0.5).weight(sigma) * c_out.square(), torch.ones(9, dtype=torch.float64)
    )


def test_noise_level_distributions():
    """The defaults: EDM's ln sigma ~ N(-1.2, 1.2^2) with sigma_data 0.5 (Karras et al., 2022,
    Table 1), flow t below FLOW_T_MAX = 0.999. Tolerances are >= 6 standard errors of the
    100k-sample estimates (sd/sqrt(n) <= 0.004)."""
    torch.manual_seed(0)
    cpu, n = torch.device("cpu"), 100_000
    assert EDMLoss().sigma_data == Preconditioning().sigma_data == 0.5
    log_sigma = EDMLoss().sample_sigma(n, cpu).log()
    assert log_sigma.mean().item() == pytest.approx(-1.2, abs=0.02)
    assert log_sigma.std().item() == pytest.approx(1.2, abs=0.02)
    vp = VPSchedule(steps=4)  # t uniform over all T steps, t = 0 included
    sigma = DDPMLoss(vp).sample_sigma(n, cpu)
    index = torch.searchsorted(vp.sigmas, sigma)
    assert torch.equal(vp.sigmas[index], sigma)
    torch.testing.assert_close(
        torch.bincount(index, minlength=4) / n, torch.full((4,), 0.25), atol=0.01, rtol=0
    )
    sigma = ScoreMatchingLoss().sample_sigma(n, cpu)  # EDM's VELoss: log-uniform in [0.02, 100]
    u = (sigma / 0.02).log() / math.log(100 / 0.02)
    assert 0 < u.min() < 0.001 and 0.999 < u.max() < 1  # P(min > 0.001) = 0.999^n = e^-100
    assert u.mean().item() == pytest.approx(0.5, abs=0.01)  # U(0, 1): mean 1/2, sd 1/sqrt(12)
    assert u.std().item() == pytest.approx(12**-0.5, abs=0.01)
    t = FlowMatchingLoss().sample_t(n, cpu)
    assert 0 < t.min() and 0.998 < t.max() <= 0.999  # P(max <= 0.998) = (0.998 / 0.999)^n = e^-100
    assert t.mean().item() == pytest.approx(0.4995, abs=0.01)
    logit = (FlowMatchingLoss("logit-normal", t_max=0.999).sample_t(n, cpu) / 0.999).logit()
    assert logit.mean().item() == pytest.approx(0.0, abs=0.02)  # SD3's logit-normal(0, 1)
    assert logit.std().item() == pytest.approx(1.0, abs=0.02)


def _network(x, c_noise, labels=None):
    """Any network: its output depends on its input and its time (so both must be right)."""
    return torch.tanh(x) * 0.3 + 0.01 * c_noise.reshape(-1, 1)


def test_each_objective_as_called_is_its_papers_loss():
    """DDPMLoss() is ||eps_hat(x_t, t) - eps||^2 at t ~ U{0..T-1}, FlowMatchingLoss() is
    ||u_hat(x_t, t) - (eps - x0)||^2 at x_t = (1 - t) x0 + t eps, and EDMLoss() is
    lambda ||D - x0||^2: each written from its paper, with the draws the loss itself makes."""
    x0 = torch.randn(6, 5, generator=torch.Generator().manual_seed(1))
    vp = VPSchedule()
    ddpm_net = Denoiser(_network, Preconditioning("epsilon"), vp)
    torch.manual_seed(2)
    t = torch.randint(0, vp.steps, (6,))
    eps = torch.randn_like(x0)
    x_t = (vp.alpha_bar[t].sqrt()[:, None] * x0 + (1 - vp.alpha_bar[t]).sqrt()[:, None] * eps).float()
    torch.manual_seed(2)
    got = DDPMLoss(vp)(ddpm_net, x0)["loss"]
    torch.testing.assert_close(got, (_network(x_t, t.float()) - eps).square().mean(), rtol=1e-4, atol=1e-7)

    flow = FlowMatchingLoss()
    flow_net = Denoiser(_network, Preconditioning("velocity"), FlowSchedule())
    eps = torch.randn_like(x0)
    torch.manual_seed(3)
    t = flow.sample_t(6, x0.device)
    x_t = ((1 - t[:, None]) * x0 + t[:, None] * eps).float()
    torch.manual_seed(3)
    got = flow(flow_net, x0, eps=eps)["loss"]
    expected = (_network(x_t, t.float()) - (eps - x0)).square().mean()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-7)

    edm = EDMLoss()
    edm_net = Denoiser(_network, Preconditioning("edm"))
    torch.manual_seed(4)
    sigma = edm.sample_sigma(6, x0.device)
    eps = torch.randn_like(x0)
    denoised = edm_net(x0 + sigma[:, None].float() * eps, sigma)
    weight = (sigma**2 + 0.25) / (0.5 * sigma) ** 2
    torch.manual_seed(4)
    got = edm(edm_net, x0)["loss"]
    expected = (weight[:, None] * (denoised - x0).double().square()).mean()
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-7)


def test_the_score_objective_is_songs_denoising_score_matching():
    """ScoreMatchingLoss() with the score preconditioning is score_sde's VE loss (reduce_mean, no
    likelihood weighting), ||sigma s_hat + eps||^2 with s_hat = F / sigma the network's score, at
    sigma = sigma_min (sigma_max / sigma_min)^u; and, for any parameterization, EDM's VELoss
    (1 / sigma^2) ||D - x0||^2, the draws being the loss's own."""
    x0 = torch.randn(6, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    loss = ScoreMatchingLoss(sigma_min=0.01, sigma_max=50.0)
    song = Denoiser(_network, Preconditioning("score"))
    torch.manual_seed(5)
    sigma = 0.01 * (50.0 / 0.01) ** torch.rand(6, dtype=torch.float64)
    eps = torch.randn_like(x0)
    x_hat = x0 + sigma[:, None] * eps
    score = _network(x_hat, song.c_noise(sigma)) / sigma[:, None]
    torch.manual_seed(5)
    got = loss(song, x0)["loss"]
    torch.testing.assert_close(got, (sigma[:, None] * score + eps).square().mean(), rtol=1e-12, atol=0)

    edm_net = Denoiser(_network, Preconditioning("edm"))
    torch.manual_seed(6)
    sigma = loss.sample_sigma(6, x0.device)
    eps = torch.randn_like(x0)
    denoised = edm_net(x0 + sigma[:, None] * eps, sigma)
    torch.manual_seed(6)
    got = loss(edm_net, x0)["loss"]
    expected = ((denoised - x0).square() / sigma[:, None] ** 2).mean()
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        ScoreMatchingLoss(sigma_min=1.0, sigma_max=1.0)


def test_preconditioned_inputs_are_the_native_states():
    """epsilon: the network sees the VP state sqrt(abar) x_hat; velocity: (1 - t) x0 + t eps."""
    _, x0, eps, sigma = _setup("epsilon")
    x_hat = x0 + sigma[:, None] * eps
    _, _, c_in = Preconditioning("epsilon").coefficients(sigma)
    torch.testing.assert_close(c_in[:, None] * x_hat, x_hat / (1 + sigma[:, None] ** 2).sqrt())
    _, _, c_in = Preconditioning("velocity").coefficients(sigma)
    t = (sigma / (1 + sigma))[:, None]
    torch.testing.assert_close(c_in[:, None] * x_hat, (1 - t) * x0 + t * eps)


SIGMAS = torch.tensor([0.02, 0.5, 1.0, 3.0, 80.0], dtype=torch.float64)


@pytest.mark.parametrize("sigma_data", [0.5, 1.0])
def test_coefficients_equal_the_closed_forms_of_the_table(sigma_data):
    """Each row of the docs' table written out directly, sigma by sigma (EDM Table 1; flow matching)."""
    for s in SIGMAS.tolist():
        r = (s**2 + sigma_data**2) ** 0.5
        table = {
            "epsilon": (1.0, -s, 1 / (1 + s**2) ** 0.5),
            "x0": (0.0, 1.0, 1 / r),
            "v": (sigma_data**2 / r**2, -s * sigma_data / r, 1 / r),
            "edm": (sigma_data**2 / r**2, s * sigma_data / r, 1 / r),
            "velocity": (1 / (1 + s), -s / (1 + s), 1 / (1 + s)),
            "score": (1.0, s, 1.0),  # EDM's VEPrecond
        }
        for kind, expected in table.items():
            got = Preconditioning(kind, sigma_data).coefficients(torch.tensor([s], dtype=torch.float64))
            for name, value, want in zip(("c_skip", "c_out", "c_in"), got, expected):
                assert value.item() == pytest.approx(want, rel=1e-12, abs=1e-15), (kind, name, s)


@pytest.mark.parametrize("kind", ["epsilon", "x0", "v", "velocity", "score"])
def test_the_ideal_network_output_is_the_named_target(kind):
    """F* = (x0 - c_skip x_hat) / c_out, the output that makes D exact, is the quantity the
    parameterization is named after, computed here from x0 and eps alone (v: Salimans & Ho with
    alpha = 1 / sqrt(1 + sigma^2), sigma_t = sigma / sqrt(1 + sigma^2), i.e. sigma_data = 1)."""
    precond, x0, eps, sigma = _setup(kind, sigma_data=1.0)
    s = sigma[:, None]
    c_skip, c_out, _ = (c[:, None] for c in precond.coefficients(sigma))
    ideal = (x0 - c_skip * (x0 + s * eps)) / c_out
    named = {
        "epsilon": eps,
        "x0": x0,
        "v": (eps - s * x0) / (1 + s**2).sqrt(),
        "velocity": eps - x0,
        # sigma times the score of x_hat ~ N(x0, sigma^2 I): sigma (x0 - x_hat) / sigma^2 = -eps
        "score": s * (x0 - (x0 + s * eps)) / s**2,
    }[kind]
    torch.testing.assert_close(ideal, named, rtol=1e-9, atol=1e-9)


def test_edm_c_noise_is_a_quarter_of_ln_sigma():
    denoiser = Denoiser(lambda x, c, labels=None: x, Preconditioning("edm"))
    sigma = torch.tensor([1.0, torch.e**4, 0.002], dtype=torch.float64)
    torch.testing.assert_close(
        denoiser.c_noise(sigma),
        torch.tensor([0.0, 1.0, 0.25 * torch.log(sigma[2]).item()], dtype=torch.float64),
    )


def test_c_noise_is_t_scale_times_the_schedules_time():
    net = lambda x, c, labels=None: x  # noqa: E731
    vp = VPSchedule()
    steps = torch.tensor([0, 10, 999])
    torch.testing.assert_close(
        Denoiser(net, Preconditioning("epsilon"), vp).c_noise(vp.sigmas[steps]), steps.double()
    )
    sigma = torch.tensor([0.1, 1.0, 9.0], dtype=torch.float64)
    flow = Denoiser(net, Preconditioning("velocity"), FlowSchedule(), t_scale=1000.0)
    torch.testing.assert_close(flow.c_noise(sigma), 1000.0 * sigma / (1 + sigma))
    edm = Denoiser(net, Preconditioning("edm"), t_scale=2.0)
    torch.testing.assert_close(edm.c_noise(sigma), 2.0 * sigma.log() / 4)


@pytest.mark.parametrize(
    "loss", [DDPMLoss(VPSchedule()), EDMLoss(), FlowMatchingLoss(), ScoreMatchingLoss()], ids=type
)
def test_each_objective_hands_the_labels_to_the_network(loss):
    """Class-conditional training: the network sees the batch's labels, not None."""
    seen = []

    def network(x, c_noise, labels=None):
        seen.append(labels)
        return x

    loss(Denoiser(network, Preconditioning("edm")), torch.randn(3, 4), torch.tensor([7, 1, 2]))
    assert len(seen) == 1 and torch.equal(seen[0], torch.tensor([7, 1, 2]))
