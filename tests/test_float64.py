"""A float64 model computes its loss in float64, as a gradient check needs.

Half-precision safeguards (a softmax, a normalization or a loss lifted to float32 under autocast)
must not round float64 down. The check: along a random direction u of the parameters (or the
input), the central difference (L(p + h u) - L(p - h u)) / 2h with h = 1e-7 equals autograd's
u . grad L. In float64 they differ by the rounding of L, ~2^-53 |L| / h (plus h^2 curvature); one
float32 rounding inside L leaves an error near 2^-24 |L| / h, 2^29 times more. The tolerance:
relative 1e-5, or absolute 100 * 2^-53 |L| / h for a large loss moving slowly. The perturbed
tensors are the ones after the models' last ReLU or max-pool: a kink crossed within h would break
the agreement in any precision.
"""

from collections.abc import Callable

import pytest
import torch
from torch import nn

from deepzoo.models.autoencoder import Autoencoder, AutoencoderConfig
from deepzoo.models.clip import ImageTextCLIP, ImageTextConfig, MotionMusicCLIP, MotionMusicConfig
from deepzoo.models.dance import MotionVQVAE, MotionVQVAEConfig
from deepzoo.models.detection import DetectorConfig, FasterRCNN
from deepzoo.models.diffusion import Diffusion, DiffusionConfig
from deepzoo.models.ensemble import Ensemble
from deepzoo.models.flows import Flow, FlowConfig
from deepzoo.models.gan import GAN, GANConfig
from deepzoo.models.gpt import GPT, GPTConfig
from deepzoo.models.online import OnlineConfig, online_detector
from deepzoo.models.pointnet import PointAEConfig, PointNetAutoencoder
from deepzoo.models.segmentation import SegmentationConfig, SegmentationNet
from deepzoo.models.vqgan import VQGAN, VQGANConfig
from deepzoo.models.vqvae import VQVAE, VQVAEConfig
from deepzoo.nn.losses import PerceptualLoss
from deepzoo.nn.quantize import nearest_code
from deepzoo.nn.unet import UNetConfig
from deepzoo.recipes.registry import get_recipe
from deepzoo.rl.actor_critic import A2CConfig, ActorCritic
from deepzoo.rl.sequence import PromptedGPT, SequenceACConfig, SequenceActorCritic

STEP = 1e-7
RTOL = 1e-5


def _directional_check(loss_of: Callable[[], torch.Tensor], tensors: list[torch.Tensor]) -> None:
    """loss_of() -> a float64 scalar of `tensors`; its derivative along a random direction, by
    central differences and by autograd, must agree. The tensors first move off their start: a
    zero-initialized output layer (the U-Net's, a flow's coupling) makes the output ~h u, whose
    float32 rounding (~2^-24 h) no difference could see."""
    with torch.no_grad():
        for t in tensors:
            t.add_(0.1 * torch.randn_like(t))
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
    rounding = 100 * torch.finfo(torch.float64).eps / 2 * abs(loss.item()) / STEP
    assert abs(analytic) > max(1e-3, 10 * rounding)  # the loss moves along u: not 0 == 0
    assert numeric == pytest.approx(analytic, rel=RTOL, abs=rounding)


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


@pytest.mark.parametrize("process", ["edm", "vp", "flow", "ve"])
def test_a_diffusion_model_keeps_float64_in_its_loss_its_time_features_and_its_samples(process):
    """The noise level reaches the U-Net's sinusoidal time features in float64 (it was rounded to
    float32 and clashed with float64 weights), and sampling draws float64 noise. (ve: Song et al.'s
    score objective and preconditioning.)"""
    torch.manual_seed(0)
    net = UNetConfig(channels=(8, 16), num_classes=10, heads=2, attention_levels=(1,))
    song = {"objective": "score", "parameterization": "score"} if process == "ve" else {}
    model = Diffusion(DiffusionConfig(net=net, image_size=8, process=process, steps=2, **song)).double()
    batch = {"x": torch.rand(2, 1, 8, 8, dtype=torch.float64), "y": torch.tensor([1, 2])}
    _directional_check(_seeded(model, batch), list(model.parameters()))  # SiLU and GroupNorm: smooth
    noise = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    assert (
        model.generate(noise, batch["y"], generator=torch.Generator().manual_seed(0)).dtype == torch.float64
    )
    images = model.sample(2, generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, 1, 8, 8) and images.dtype == torch.float64


def _last(count: int) -> Callable[[nn.Module], list[torch.Tensor]]:
    return lambda model: list(model.parameters())[-count:]


AFTER_THE_LAST_KINK = {
    "cnn-mnist": _last(2),  # the head after the ReLUs and max-pools
    "resnet-mnist": _last(2),
    "linear-softmax-mnist": _last(2),  # all of it: softmax and the L2 penalty are smooth
    "two-layer-mnist": _last(2),  # w2, b2 after the ReLU
    "char-lstm-shakespeare": _last(2),  # the head: truncated backpropagation cuts the LSTM's gradient
    "ae-mnist": lambda model: list(model.decoder.parameters())[-2:],  # the decoder's output layer
    "vae-mnist": lambda model: list(model.decoder.parameters())[-2:],
    "cvae-mnist": lambda model: list(model.decoder.parameters())[-2:],
}


@pytest.mark.parametrize("name", list(AFTER_THE_LAST_KINK))
def test_a_float64_recipe_model_keeps_float64(name):
    """The recipe's own model and four training examples of its own data, in float64."""
    recipe = get_recipe(name)
    torch.manual_seed(0)
    model = recipe.build(recipe.default).double()
    train, _ = recipe.data(recipe.default, torch.device("cpu"))
    batch = {k: v[:4].double() if v.is_floating_point() else v[:4] for k, v in train.tensors.items()}
    _directional_check(_seeded(model, batch), AFTER_THE_LAST_KINK[name](model))


def test_a_float64_multiclass_svm_keeps_float64():
    """The hinge has kinks: the data loss is compared with the formula, in float64, instead."""
    recipe = get_recipe("linear-svm-mnist")
    torch.manual_seed(0)
    model = recipe.build(recipe.default).double()
    x, y = torch.rand(5, 1, 28, 28, dtype=torch.float64), torch.tensor([0, 3, 9, 3, 1])
    scores = model(x)
    margins = (scores - scores.gather(1, y[:, None]) + model.config.margin).clamp(min=0)
    expected = (margins.sum(1) - model.config.margin).mean()  # the true class adds the margin
    data_loss = model.loss({"x": x, "y": y})["data_loss"]
    assert data_loss.dtype == torch.float64
    torch.testing.assert_close(data_loss, expected, rtol=1e-14, atol=0)


def test_a_float64_segmentation_net_keeps_float64():
    torch.manual_seed(0)
    model = SegmentationNet(SegmentationConfig(num_classes=3, widths=(4, 8))).double()
    batch = {"x": torch.rand(2, 1, 8, 8, dtype=torch.float64), "semantic": torch.randint(0, 3, (2, 8, 8))}
    _directional_check(_seeded(model, batch), list(model.head.parameters()))


def test_the_vector_quantized_models_keep_float64_with_an_ema_codebook():
    """The EMA update adds float64 vectors to a float64 codebook (it added float32 ones and failed);
    the reconstruction terms stay float64."""
    torch.manual_seed(0)
    vqvae = VQVAE(VQVAEConfig(hidden=16, res_hidden=8, res_layers=1, num_codes=16, code_dim=4, ema=True))
    out = vqvae.double().train().loss({"x": torch.randn(2, 1, 28, 28, dtype=torch.float64)})
    assert out["loss"].dtype == out["recon"].dtype == torch.float64
    assert vqvae.quantizer.codebook.dtype == torch.float64
    dance = MotionVQVAE(MotionVQVAEConfig(downsample=2, hidden=32, num_codes=32, code_dim=8)).double()
    terms = dance.train().loss({"motion": torch.randn(2, 16, 75, dtype=torch.float64)})
    assert all(terms[k].dtype == torch.float64 for k in ("loss", "position", "velocity", "acceleration"))
    vqgan = VQGAN(VQGANConfig()).double()
    terms = vqgan.train().loss({"x": torch.rand(1, 1, 16, 16, dtype=torch.float64) * 2 - 1})
    assert all(terms[k].dtype == torch.float64 for k in ("loss", "rec", "l1"))


def test_float64_quantized_models_decode_in_float64():
    """Decoding codes (images, dances) keeps a float64 model's precision; the nearest code is
    chosen in float64, where two codes closer than float32 can tell apart still differ."""
    torch.manual_seed(0)
    vqvae = VQVAE(VQVAEConfig(hidden=16, res_hidden=8, res_layers=1, num_codes=16, code_dim=4)).double()
    codes = torch.randint(16, (2, 7, 7))
    exact = vqvae.decoder(vqvae.quantizer.lookup(codes)).clamp(0, 1)
    torch.testing.assert_close(vqvae.decode(codes), exact, rtol=0, atol=0)
    vqgan = VQGAN(VQGANConfig(image_size=16, channels=(8, 16))).double()
    assert vqgan.decode(torch.randint(vqgan.config.num_codes, (1, 8, 8))).dtype == torch.float64
    dance = MotionVQVAE(MotionVQVAEConfig(downsample=2, hidden=16, num_codes=8, code_dim=8)).double()
    assert dance.decode(torch.randint(8, (2, dance.parts, 3))).dtype == torch.float64
    codebook = torch.tensor([[1.0 + 1e-12], [1.0]], dtype=torch.float64)  # one float32 value
    assert nearest_code(torch.zeros(1, 1, dtype=torch.float64), codebook).item() == 1


class _BackwardOnly:
    """The optimizers' `update` reduced to a backward pass: the terms' dtypes are what is checked."""

    def update(self, names: str, loss: torch.Tensor) -> dict[str, torch.Tensor]:
        loss.backward()
        return {}


@pytest.mark.parametrize("objective", ["non_saturating", "wgan_gp"])
def test_a_float64_gan_trains_and_samples_in_float64(objective):
    """Its noise follows the model's dtype (it was float32 and clashed with float64 weights); along
    the critic's output layer its loss matches central differences."""
    torch.manual_seed(0)
    model = GAN(GANConfig(arch="dcgan", latent=8, width=8, objective=objective, n_critic=1, d_norm="layer"))
    model.double()
    real = torch.rand(4, 1, 28, 28, dtype=torch.float64)
    out = model.train_step({"x": real}, 0, _BackwardOnly())
    assert out["loss_d"].dtype == out["loss_g"].dtype == torch.float64
    fake = model.generator(torch.randn(4, 8, dtype=torch.float64), None).detach()

    def loss_of() -> torch.Tensor:
        torch.manual_seed(7)  # the gradient penalty's interpolation points
        with torch.enable_grad():  # the penalty differentiates the critic, also inside no_grad
            return model.objective.discriminator_loss(
                lambda x: model.discriminator(x, None), real * 2 - 1, fake
            )["loss_d"]

    _directional_check(loss_of, list(model.discriminator.parameters())[-2:])
    assert model.sample(3, generator=torch.Generator().manual_seed(0)).dtype == torch.float64


@pytest.mark.parametrize(
    "build",
    [
        lambda: Autoencoder(AutoencoderConfig(kind="vae", hidden=32, latent=4)),
        lambda: Autoencoder(AutoencoderConfig(kind="cvae", hidden=32, latent=4)),
        lambda: Flow(FlowConfig(kind="nice", depth=2, hidden=16, blocks=1)),
        lambda: Flow(FlowConfig(kind="realnvp", depth=1, hidden=8, blocks=1, scales=1)),
        lambda: Flow(FlowConfig(kind="glow", depth=1, hidden=8, scales=1)),
    ],
    ids=["vae", "cvae", "nice", "realnvp", "glow"],
)
def test_float64_generative_models_sample_in_float64(build):
    """Their prior draws follow the model's dtype (float32 draws clashed with float64 weights)."""
    torch.manual_seed(0)
    images = build().double().eval().sample(3, generator=torch.Generator().manual_seed(0))
    assert images.dtype == torch.float64 and images.shape == (3, 1, 28, 28)


def test_a_float64_ensemble_averages_probabilities_in_float64():
    torch.manual_seed(0)
    members = [nn.Linear(5, 3).double() for _ in range(3)]
    x = torch.randn(4, 5, dtype=torch.float64)
    mean = torch.stack([m(x).softmax(-1) for m in members]).mean(0)
    torch.testing.assert_close(Ensemble(members)(x), mean.log(), rtol=1e-14, atol=0)


def test_the_idn_contrastive_term_keeps_float64():
    torch.manual_seed(0)
    config = OnlineConfig(arch="idn", input_dim=6, num_classes=3, embed=8, hidden=8, window=4, dropout=0.0)
    model = online_detector(config).double()
    batch = {
        "x": torch.randn(2, 9, 6, dtype=torch.float64),
        "target": torch.nn.functional.one_hot(torch.randint(0, 3, (2, 9)), 3).double(),
    }
    terms = model.loss(batch)
    assert all(v.dtype == torch.float64 for k, v in terms.items() if v.is_floating_point()), terms


@pytest.mark.parametrize("arch", ["lstm", "trn", "idn"])
def test_a_float64_online_detectors_stream_probabilities_are_its_softmax_in_float64(arch):
    torch.manual_seed(0)
    config = OnlineConfig(arch=arch, input_dim=6, num_classes=3, embed=8, hidden=8, window=4, dropout=0.0)
    model = online_detector(config).double().eval()
    x = torch.randn(2, 9, 6, dtype=torch.float64)
    probabilities = model.stream_probabilities(x, chunk=4)
    assert probabilities.dtype == torch.float64
    torch.testing.assert_close(probabilities, model(x)[0].softmax(-1), rtol=0, atol=1e-14)


def test_a_float64_mask_rcnn_keeps_float64_in_every_loss_term():
    """Along the heads' output layers (classify, regress, the mask logits): past every ReLU, and
    the proposals, matches and samples do not move."""
    torch.manual_seed(0)
    config = DetectorConfig(
        widths=(8, 16), anchor_sizes=(8.0, 14.0), anchor_ratios=(1.0, 2.0), head_width=32,
        masks=True, mask_roi_size=7, mask_width=16,
    )  # fmt: skip
    model = FasterRCNN(config).double()
    boxes = torch.tensor([[[2.0, 3, 15, 17], [14, 12, 29, 30]], [[5, 5, 20, 14], [0, 0, 0, 0]]])
    labels = torch.tensor([[3, 7], [1, -1]])
    instances = torch.zeros(2, 32, 32, dtype=torch.uint8)
    for b, j in ((0, 0), (0, 1), (1, 0)):
        x0, y0, x1, y1 = boxes[b, j].long().tolist()
        instances[b, y0:y1, x0:x1] = j + 1
    batch = {"x": torch.rand(2, 1, 32, 32, dtype=torch.float64), "boxes": boxes, "labels": labels}
    batch["instances"] = instances
    outputs = [*model.classify.parameters(), *model.regress.parameters(), *model.mask_head[-1].parameters()]
    _directional_check(_seeded(model, batch), outputs)
    torch.manual_seed(7)
    every = model.loss(batch)
    assert all(every[k].dtype == torch.float64 for k in ("loss", "rpn_cls", "rpn_box", "cls", "box", "mask"))
    found = model.eval().predict(batch["x"])
    assert sum(len(d["scores"]) for d in found) > 0
    assert all(d["scores"].dtype == d["boxes"].dtype == torch.float64 for d in found)


@pytest.mark.parametrize("env, actions", [("CartPole-v1", "discrete"), ("Pendulum-v1", "continuous")])
def test_a_float64_actor_critic_keeps_float64(env, actions):
    """Along the actor's parameters: the advantages come from the critic alone, so moving the
    actor leaves them fixed and the loss is smooth (tanh MLPs, log-probabilities, entropy)."""
    torch.manual_seed(0)
    model = ActorCritic(A2CConfig(env=env, normalize_advantage=True)).double()
    T, N, obs_dim = 6, 3, model.actor[0].in_features
    batch = {
        "obs": torch.randn(T, N, obs_dim, dtype=torch.float64),
        "next_obs": torch.randn(T, N, obs_dim, dtype=torch.float64),
        "rewards": torch.randn(T, N, dtype=torch.float64),
        "terminated": torch.rand(T, N) < 0.2,
        "truncated": torch.zeros(T, N, dtype=torch.bool),
    }
    with torch.no_grad():
        batch["actions"] = model.distribution(batch["obs"]).sample()
    _directional_check(_seeded(model, batch), [p for p in model.actor.parameters()])
    terms = model.loss(batch)
    assert all(terms[k].dtype == torch.float64 for k in ("loss", "policy_loss", "value_loss", "entropy"))


def test_a_float64_sequence_actor_critic_keeps_float64():
    """Along every parameter of the policy: with beta = 0 and the critic's head at its zero start,
    the advantages are the rewards of the fixed actions, so the loss moves only through
    log pi(a_t) (a GELU transformer, smooth)."""
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=5, block_size=8, layers=1, heads=2, dim=16, positions="rope"))
    reward = lambda context, actions: (actions == 0).double().mean(1) - 0.3  # noqa: E731
    model = SequenceActorCritic(
        PromptedGPT(gpt, new_tokens=6, max_token=4), reward, lambda batch, device: {}, SequenceACConfig(0.0)
    ).double()
    context = {"prompt": torch.full((5, 1), 4)}
    actions = torch.randint(0, 4, (5, 6))
    _directional_check(lambda: model.terms(context, actions)["loss"], list(model.policy.parameters()))
    terms = model.terms(context, actions)
    assert all(terms[k].dtype == torch.float64 for k in ("loss", "policy_loss", "value_loss", "reward", "kl"))
