"""A float64 model computes its loss in float64, as a gradient check needs.

Half-precision safeguards (a softmax, a normalization or a loss lifted to float32 under autocast)
must not round float64 down. The check: along a random direction u of the parameters (or the
input), the central difference (L(p + h u) - L(p - h u)) / 2h with h = 1e-7 equals autograd's
u . grad L. In float64 they agree to ~1e-9 relative (rounding 2^-53 / h, plus h^2 curvature); one
float32 rounding inside L leaves an error near 2^-24 / h ~ 0.1. The perturbed tensors are the ones
after the models' last ReLU or max-pool: a kink crossed within h would break the agreement in any
precision.
"""

from collections.abc import Callable

import pytest
import torch
from torch import nn

from deepzoo.models.clip import ImageTextCLIP, ImageTextConfig, MotionMusicCLIP, MotionMusicConfig
from deepzoo.models.diffusion import Diffusion, DiffusionConfig
from deepzoo.models.pointnet import PointAEConfig, PointNetAutoencoder
from deepzoo.models.vqvae import VQVAE, VQVAEConfig
from deepzoo.nn.losses import PerceptualLoss
from deepzoo.nn.unet import UNetConfig

STEP = 1e-7
RTOL = 1e-5


def _directional_check(loss_of: Callable[[], torch.Tensor], tensors: list[torch.Tensor]) -> None:
    """loss_of() -> a float64 scalar of `tensors`; its derivative along a random direction, by
    central differences and by autograd, must agree."""
    direction = [torch.randn_like(t) for t in tensors]
    for t in tensors:
        t.grad = None
    loss = loss_of()
    assert loss.dtype == torch.float64
    loss.backward()
    analytic = sum((t.grad * u).sum() for t, u in zip(tensors, direction)).item()
    values = []
    for sign in (1, -1):
        with torch.no_grad():
            for t, u in zip(tensors, direction):
                t.add_(sign * STEP * u)
            values.append(loss_of().item())
            for t, u in zip(tensors, direction):
                t.sub_(sign * STEP * u)
    numeric = (values[0] - values[1]) / (2 * STEP)
    assert abs(analytic) > 1e-3  # the loss moves along u: the comparison is not 0 == 0
    assert numeric == pytest.approx(analytic, rel=RTOL)


def _seeded(model: nn.Module, batch: dict[str, torch.Tensor]) -> Callable[[], torch.Tensor]:
    """The model's loss with its random draws (captions, windows) the same at every call."""

    def loss_of() -> torch.Tensor:
        torch.manual_seed(7)
        return model.loss(batch)["loss"]

    return loss_of


def test_the_image_text_clip_loss_keeps_float64():
    torch.manual_seed(0)
    model = ImageTextCLIP(ImageTextConfig(embed_dim=16, text_width=32, text_layers=1, text_heads=2)).double()
    batch = {"x": torch.rand(6, 1, 28, 28, dtype=torch.float64), "y": torch.arange(6)}
    after_the_cnn = [
        p for name, p in model.named_parameters() if not name.startswith("image.") or ".head." in name
    ]
    _directional_check(_seeded(model, batch), after_the_cnn)


def test_the_motion_music_clip_loss_keeps_float64():
    torch.manual_seed(0)
    model = MotionMusicCLIP(MotionMusicConfig(width=16, layers=3, embed_dim=8, window=20)).double()
    batch = {
        "motion": torch.randn(3, 30, 75, dtype=torch.float64),
        "music": torch.randn(3, 30, 438, dtype=torch.float64),
    }
    projections = [*model.motion_project.parameters(), *model.music_project.parameters()]
    _directional_check(_seeded(model, batch), [*projections, model.logit_scale.log_scale])


def test_the_point_cloud_autoencoder_loss_keeps_float64():
    torch.manual_seed(0)
    model = PointNetAutoencoder(PointAEConfig(points=16, encoder=(16, 32), latent=16, decoder=(32,))).double()
    batch = {"points": torch.rand(3, 20, 3, dtype=torch.float64)}
    _directional_check(_seeded(model, batch), list(model.decoder[-1].parameters()))  # the points


def test_the_vqvae_loss_keeps_float64():
    torch.manual_seed(0)
    config = VQVAEConfig(hidden=16, res_hidden=8, res_layers=1, num_codes=16, code_dim=4, ema=False)
    model = VQVAE(config).double().eval()  # eval: no codebook restarts between the calls
    batch = {"x": torch.randn(2, 1, 28, 28, dtype=torch.float64)}
    # the decoder's output layer: the straight-through gradient of the encoder and the codebook
    # is, by design, not the derivative of the loss
    _directional_check(_seeded(model, batch), list(model.decoder[-1].parameters()))


def test_the_perceptual_loss_keeps_float64():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU()).double()
    loss = PerceptualLoss(net, taps=[0])  # the first convolution's output: no kink before it
    x = torch.randn(2, 1, 10, 10, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 1, 10, 10, dtype=torch.float64)
    _directional_check(lambda: loss(x, y).mean(), [x])


@pytest.mark.parametrize("process", ["edm", "vp", "flow"])
def test_a_diffusion_model_keeps_float64_in_its_loss_its_time_features_and_its_samples(process):
    """The noise level reaches the U-Net's sinusoidal time features in float64 (it was rounded to
    float32 and clashed with float64 weights), and sampling draws float64 noise."""
    torch.manual_seed(0)
    net = UNetConfig(channels=(8, 16), num_classes=10, heads=2, attention_levels=(1,))
    model = Diffusion(DiffusionConfig(net=net, image_size=8, process=process, steps=2)).double()
    batch = {"x": torch.rand(2, 1, 8, 8, dtype=torch.float64), "y": torch.tensor([1, 2])}
    _directional_check(_seeded(model, batch), list(model.parameters()))  # SiLU and GroupNorm: smooth
    noise = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    assert (
        model.generate(noise, batch["y"], generator=torch.Generator().manual_seed(0)).dtype == torch.float64
    )
    assert model.sample(2, generator=torch.Generator().manual_seed(0)).shape == (2, 1, 8, 8)
