import pytest
import torch

from deepzoo.diffusion.samplers import SAMPLERS
from deepzoo.diffusion.schedules import VPSchedule, flow_sigmas, karras_sigmas
from deepzoo.models.diffusion import Diffusion, DiffusionConfig
from deepzoo.nn.unet import UNetConfig
from deepzoo.train.trainer import TrainConfig, Trainer

NET = UNetConfig(channels=(8, 16, 16), num_classes=10, heads=2)
COMBINATIONS = [
    ("vp", "epsilon", "ddpm", "ddim"),
    ("vp", "v", "edm", "ddpm"),
    ("edm", "edm", "edm", "heun"),
    ("edm", "x0", "edm", "dpmpp_2m"),
    ("ve", "edm", "edm", "euler"),
    ("ve", "score", "score", "heun"),
    ("flow", "velocity", "flow", "rectified_flow_euler"),
    ("flow", "edm", "flow", "heun"),
]


@pytest.mark.parametrize("process,parameterization,objective,sampler", COMBINATIONS)
def test_any_combination_trains_and_samples(process, parameterization, objective, sampler, mnist_small):
    torch.manual_seed(0)
    config = DiffusionConfig(net=NET, process=process, parameterization=parameterization, objective=objective,
                             sampler=sampler, steps=3)  # fmt: skip
    model = Diffusion(config)
    out = model.loss(mnist_small[slice(0, 8)])
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    images = model.eval().sample(4, generator=torch.Generator().manual_seed(0))
    assert images.shape == (4, 1, 28, 28) and 0 <= images.min() and images.max() <= 1


def test_ddpm_objective_needs_the_vp_process():
    with pytest.raises(ValueError, match="vp process"):
        Diffusion(DiffusionConfig(net=NET, process="edm", objective="ddpm"))
    with pytest.raises(ValueError, match="unknown sampler"):
        Diffusion(DiffusionConfig(net=NET, sampler="euler-maruyama"))


def test_labels_are_dropped_for_guidance_only_in_training():
    """A share label_dropout = 0.2 of the labels become the null label (10); tolerance 0.02, 5
    standard errors (sqrt(0.2 * 0.8 / 10,000) = 0.004)."""
    model = Diffusion(DiffusionConfig(net=NET, label_dropout=0.2))
    y = torch.zeros(10_000, dtype=torch.long)
    torch.manual_seed(0)
    dropped = (model.train()._labels(y) == 10).float().mean().item()
    assert dropped == pytest.approx(0.2, abs=0.02)
    assert (model.eval()._labels(y) == 0).all()


def test_the_objective_sees_images_mapped_to_minus_one_one_and_the_labels():
    """x_0 = 2 x - 1 (sigma_data = 0.5 is the spread of that range); in evaluation the labels pass
    unchanged."""
    model = Diffusion(DiffusionConfig(net=NET)).eval()
    seen = {}
    model.objective = lambda denoiser, x0, labels: seen.update(x0=x0, labels=labels) or {"loss": x0.sum()}
    x, y = torch.rand(3, 1, 28, 28), torch.tensor([4, 0, 9])
    model.loss({"x": x, "y": y})
    assert torch.equal(seen["x0"], x * 2 - 1) and torch.equal(seen["labels"], y)


@pytest.mark.parametrize(
    "config, grid",
    [
        (dict(process="vp", vp_kind="cosine", spacing="leading", objective="ddpm"),
         lambda: VPSchedule("cosine").sampling_sigmas(5, "leading")),
        (dict(process="edm", sigma_min=0.01, sigma_max=40.0), lambda: karras_sigmas(5, 0.01, 40.0)),
        (dict(process="ve", sigma_min=0.02, sigma_max=30.0), lambda: karras_sigmas(5, 0.02, 30.0)),
        (dict(process="flow", flow_t_max=0.99, objective="flow"), lambda: flow_sigmas(5, t_max=0.99)),
    ],
)  # fmt: skip
def test_the_sampling_grid_is_the_configured_processs(config, grid):
    model = Diffusion(DiffusionConfig(net=NET, **config))
    torch.testing.assert_close(model.sigmas(5), grid(), rtol=0, atol=0)


def test_the_network_is_told_each_processs_own_time_spread_over_hundreds_of_units():
    """c_noise = T_SCALE * native time. VP: the DDPM step index t of sigma_t, as DDPM's network is
    told; VE: 1000 t where sigma = sigma_min (sigma_max / sigma_min)^t with the configured ends;
    flow: 1000 t where sigma = t / (1 - t); EDM: 250 ln(sigma) / 4. Over every sampling grid the
    told time spans hundreds of units, the range that the sinusoidal features resolve."""
    vp = Diffusion(DiffusionConfig(net=NET, process="vp", objective="ddpm"))
    steps = torch.arange(1000, dtype=torch.float64)
    torch.testing.assert_close(vp.denoiser.c_noise(vp.schedule.sigma(steps)), steps, rtol=0, atol=1e-6)
    t = torch.linspace(0.05, 0.95, 7, dtype=torch.float64)
    ve = Diffusion(DiffusionConfig(net=NET, process="ve", sigma_min=0.02, sigma_max=30.0))
    torch.testing.assert_close(ve.denoiser.c_noise(0.02 * (30 / 0.02) ** t), 1000 * t)
    flow = Diffusion(DiffusionConfig(net=NET, process="flow", objective="flow"))
    torch.testing.assert_close(flow.denoiser.c_noise(t / (1 - t)), 1000 * t)
    edm = Diffusion(DiffusionConfig(net=NET))
    sigma = torch.tensor([0.002, 1.0, 80.0], dtype=torch.float64)
    torch.testing.assert_close(edm.denoiser.c_noise(sigma), 250 * sigma.log() / 4)
    for model in (vp, ve, flow, edm):
        told = model.denoiser.c_noise(model.sigmas(18)[:-1])
        assert 100 < (told.max() - told.min()).item() < 1000 + 1e-6, model.config.process


def test_the_score_objective_draws_between_the_configured_sigmas():
    model = Diffusion(DiffusionConfig(net=NET, process="ve", parameterization="score", objective="score",
                                      sigma_min=0.05, sigma_max=20.0))  # fmt: skip
    assert (model.objective.sigma_min, model.objective.sigma_max) == (0.05, 20.0)
    assert model.denoiser.precond.kind == "score"


def test_the_objective_and_preconditioning_take_the_configured_values():
    edm = Diffusion(DiffusionConfig(net=NET, sigma_data=0.7))
    assert edm.objective.sigma_data == 0.7 and edm.denoiser.precond.sigma_data == 0.7
    flow = Diffusion(DiffusionConfig(net=NET, process="flow", objective="flow", flow_t_max=0.99))
    assert flow.objective.t_max == 0.99
    vp = Diffusion(DiffusionConfig(net=NET, process="vp", vp_kind="cosine", objective="ddpm"))
    torch.testing.assert_close(vp.objective.schedule.alpha_bar, VPSchedule("cosine").alpha_bar)


def test_sample_and_generate_pass_their_arguments_and_map_back_to_images(monkeypatch):
    """sample: labels 0..9 repeating, x = (x_0 + 1) / 2 clamped to [0, 1]; generate: the sampler,
    steps and guidance asked for (guidance 0 is the unconditional prediction, not the default)."""
    model = Diffusion(DiffusionConfig(net=NET, sampler="heun", steps=7, guidance=3.0)).eval()
    x0 = torch.linspace(-1.5, 1.5, 12 * 28 * 28).reshape(12, 1, 28, 28)
    asked = {}
    monkeypatch.setattr(model, "generate", lambda noise, labels, **kw: asked.update(labels=labels) or x0)
    torch.testing.assert_close(model.sample(12), ((x0 + 1) / 2).clamp(0, 1), rtol=0, atol=0)
    assert asked["labels"].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    monkeypatch.undo()

    calls, seen_labels = [], []
    monkeypatch.setitem(SAMPLERS, "euler", lambda denoise, noise, sigmas, generator: calls.append(
        (len(sigmas) - 1, denoise(noise, sigmas[0]))) or noise)  # fmt: skip
    monkeypatch.setattr(model, "_denoise", lambda x, sigma, labels: seen_labels.append(labels) or x)
    model.generate(torch.zeros(2, 1, 28, 28), torch.tensor([3, 5]), sampler="euler", steps=4, guidance=0.0)
    assert [steps for steps, _ in calls] == [4]
    assert [labels.tolist() for labels in seen_labels] == [[10, 10]]  # only the null label: unconditional


def test_generation_denoises_with_the_asked_labels():
    """_denoise (what every sampler and the guidance call) is D(x; sigma, labels) of the denoiser,
    sigma broadcast over the batch; with a trained-looking (non-zero) output layer the label changes
    the denoised image."""
    torch.manual_seed(0)
    model = Diffusion(DiffusionConfig(net=NET)).eval()
    for p in model.net.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x, sigma = torch.randn(2, 1, 28, 28), torch.tensor(1.5)
    threes, fives = torch.tensor([3, 3]), torch.tensor([5, 5])
    with torch.no_grad():
        expected = model.denoiser(x, sigma.expand(2), threes)
        torch.testing.assert_close(model._denoise(x, sigma, threes), expected, rtol=0, atol=0)
        assert (model._denoise(x, sigma, fives) - expected).abs().max() > 1e-3


def test_reflow_pairs_are_used_as_couplings(mnist_small):
    model = Diffusion(DiffusionConfig(net=NET, process="flow", parameterization="velocity", objective="flow"))
    batch = mnist_small[slice(0, 4)] | {"noise": torch.randn(4, 1, 28, 28)}
    torch.manual_seed(0)
    a = model.loss(batch)["loss"]
    torch.manual_seed(0)
    b = model.loss(batch | {"noise": batch["noise"] + 1})["loss"]
    assert a != b
    edm = Diffusion(DiffusionConfig(net=NET))
    with pytest.raises(ValueError, match="flow objective"):
        edm.loss(batch)


def test_a_short_run_lowers_the_denoising_loss(mnist_small, tmp_path):
    torch.manual_seed(0)
    model = Diffusion(DiffusionConfig(net=NET))
    batch = mnist_small[slice(0, 256)]

    def mean_loss():
        torch.manual_seed(1)
        return sum(model.eval().loss(batch)["loss"].item() for _ in range(4)) / 4

    before = mean_loss()
    cfg = TrainConfig(steps=60, batch_size=32, lr=2e-3, device="cpu", progress=False, eval_every=1000)
    Trainer(model, mnist_small, cfg, tmp_path).fit()
    assert mean_loss() < 0.6 * before


def test_noise_levels_in_the_wrong_order_are_refused_when_built():
    """sigma_min < sigma_max strictly (equal ends are a one-point grid); the flow starts strictly
    inside (0, 1): t = 1 is sigma = inf and t = 0 is no noise."""
    from deepzoo.config import check_ranges

    with pytest.raises(ValueError, match="sigma_min \\(100\\) must be below sigma_max \\(80\\)"):
        Diffusion(DiffusionConfig(sigma_min=100.0))
    with pytest.raises(ValueError, match="sigma_min \\(80\\) must be below sigma_max \\(80\\)"):
        Diffusion(DiffusionConfig(sigma_min=80.0))
    for t_max in (0.0, 1.0):
        with pytest.raises(ValueError, match="flow-t-max must be in \\(0, 1\\)"):
            check_ranges(DiffusionConfig(flow_t_max=t_max))
