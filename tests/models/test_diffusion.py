import pytest
import torch

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
    model = Diffusion(DiffusionConfig(net=NET, label_dropout=0.5))
    y = torch.zeros(1000, dtype=torch.long)
    torch.manual_seed(0)
    dropped = (model.train()._labels(y) == 10).float().mean().item()
    assert dropped == pytest.approx(0.5, abs=0.05)
    assert (model.eval()._labels(y) == 0).all()


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
    with pytest.raises(ValueError, match="sigma_min \\(100\\) must be below sigma_max \\(80\\)"):
        Diffusion(DiffusionConfig(sigma_min=100.0))
