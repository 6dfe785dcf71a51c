"""NICE, RealNVP and Glow as whole models: invertible with exact log-determinants, the bits/dim
bound as the formula says, the variational dequantizer's density, sampling, the bf16 path, and a
short run that learns."""

import math
from dataclasses import replace

import pytest
import torch

from deepzoo.models.flows import Flow, FlowConfig

SMALL = {
    "nice": FlowConfig(kind="nice", depth=4, hidden=16, blocks=2, image_shape=(1, 4, 4)),
    "realnvp": FlowConfig(kind="realnvp", depth=2, hidden=8, blocks=1, scales=2, image_shape=(1, 4, 4)),
    "glow": FlowConfig(kind="glow", depth=2, hidden=8, scales=2, image_shape=(1, 4, 4)),
}


def _trained_looking(config, seed=0):
    """A float64 model with ActNorm initialized on data and every parameter moved off its
    (identity) start, so no layer is trivially invertible."""
    torch.manual_seed(seed)
    model = Flow(config).double()
    model.train()
    model.log_prob(torch.rand(16, *config.image_shape, dtype=torch.float64) * 0.9 + 0.05)  # ActNorm init
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("kind", sorted(SMALL))
@pytest.mark.parametrize("preprocess", ["default", "logit"])
def test_each_model_inverts_and_its_logdet_is_the_full_jacobians(kind, preprocess):
    model = _trained_looking(replace(SMALL[kind], preprocess=preprocess))
    y = torch.rand(4, 1, 4, 4, dtype=torch.float64) * 0.9 + 0.05
    x = model._flat(y)
    z, logdet = model.flow(x)
    assert z.shape == (4, 16)
    assert (model.flow.inverse(z).view_as(x) - x).abs().max().item() < 1e-6
    for b in range(4):
        jacobian = torch.autograd.functional.jacobian(
            lambda a: model.flow(a.view(1, *x.shape[1:]))[0][0], x[b]
        )
        assert logdet[b].item() == pytest.approx(
            torch.linalg.slogdet(jacobian.reshape(16, 16))[1].item(), abs=1e-8
        )


def test_bits_per_dim_is_the_dequantized_bound_in_bits():
    """With uniform u, bits/dim = -(log p(y) - D log 256) / (D log 2) for y = (k + u) / 256; with
    variational u, -(log p(y) - log q(u | k) - D log 256) / (D log 2)."""
    model = _trained_looking(SMALL["realnvp"])
    x = torch.randint(0, 256, (3, 1, 4, 4)).double() / 255
    bits = model.nll_bits(x, torch.Generator().manual_seed(5))
    u = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    y = ((x * 255).round() + u) / 256
    expected = -(model.log_prob(y) - 16 * math.log(256)) / (16 * math.log(2))
    assert torch.allclose(bits, expected, atol=1e-9)
    # variational u: the bound subtracts log q(u | k) (its density is checked in the next test)
    torch.manual_seed(0)
    model = Flow(replace(SMALL["realnvp"], dequantization="variational")).double()
    with torch.no_grad():
        for p in model.dequantizer.parameters():
            p.add_(0.05 * torch.randn_like(p))
    bits = model.nll_bits(x, torch.Generator().manual_seed(5))
    y, log_q = model.dequantize(x, torch.Generator().manual_seed(5))
    assert (log_q.abs() > 1e-6).all()  # not the uniform case's 0
    expected = -(model.log_prob(y) - log_q - 16 * math.log(256)) / (16 * math.log(2))
    assert torch.allclose(bits, expected, atol=1e-9)


def test_fresh_flows_are_known_transforms():
    """Zero-initialized couplings: a fresh RealNVP after centring is the identity, so log p(y) =
    log N(y - 1/2); a fresh Glow's couplings each scale their half by sigmoid(2) (its ActNorm is
    not yet initialized, its 1x1 convolutions are rotations), so logdet = (D_scaled) log sigmoid(2)."""
    y = torch.rand(5, 1, 4, 4, dtype=torch.float64)
    realnvp = Flow(replace(SMALL["realnvp"], preprocess="center")).double().eval()
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(y - 0.5).flatten(1).sum(1)
    assert torch.allclose(realnvp.log_prob(y), expected, atol=1e-10)
    glow = Flow(SMALL["glow"]).double().eval()
    # level 1: 2 couplings on 4 x 2 x 2 scale 8 values each; level 2: 2 on 8 x 1 x 1 scale 4 each
    scaled = 2 * 8 + 2 * 4
    _, logdet = glow.flow(y)
    assert torch.allclose(
        logdet,
        torch.full((5,), scaled * math.log(torch.sigmoid(torch.tensor(2.0)).item()), dtype=torch.float64),
    )


def test_variational_dequantization_reports_the_logit_normal_density_of_its_noise():
    torch.manual_seed(0)
    model = Flow(replace(SMALL["realnvp"], dequantization="variational")).double()
    with torch.no_grad():
        for p in model.dequantizer.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randint(0, 256, (3, 1, 4, 4)).double() / 255
    u, log_q = model.dequantizer(x, torch.Generator().manual_seed(1))
    mu, log_sigma = model.dequantizer.net(x - 0.5).chunk(2, dim=1)
    logit_normal = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mu, log_sigma.exp()), [torch.distributions.SigmoidTransform()]
    )
    assert ((u > 0) & (u < 1)).all()
    assert torch.allclose(log_q, logit_normal.log_prob(u).flatten(1).sum(1), atol=1e-6)
    y, _ = model.dequantize(x, torch.Generator().manual_seed(1))
    assert torch.equal(torch.floor(y * 256), (x * 255).round())  # y stays in its integer's bin


@pytest.mark.parametrize("kind", sorted(SMALL))
def test_samples_are_images_in_range_and_repeat_with_the_generator(kind):
    model = _trained_looking(SMALL[kind]).float()
    a = model.sample(6, generator=torch.Generator().manual_seed(2))
    b = model.sample(6, generator=torch.Generator().manual_seed(2))
    assert a.shape == (6, 1, 4, 4) and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1


def test_samples_map_back_to_their_latents():
    model = _trained_looking(SMALL["glow"])
    z = torch.randn(3, 16, dtype=torch.float64)
    y = model.flow.inverse(z)
    assert torch.allclose(model.flow(y)[0], z, atol=1e-8)


def test_bad_configs_are_clear_errors():
    with pytest.raises(ValueError, match="divisible by 8"):
        FlowConfig(kind="glow", scales=3, image_shape=(1, 28, 28))
    with pytest.raises(ValueError, match="flow kind"):
        FlowConfig(kind="maf")
    with pytest.raises(ValueError, match="preprocess"):
        FlowConfig(preprocess="tanh")


@pytest.mark.parametrize("kind", ["realnvp", "glow"])
def test_forced_bf16_training_steps_move_and_keep_the_transform_in_float32(kind):
    """Under bf16 autocast the coupling networks run in bf16 but z, the logdet and the loss stay
    float32 and finite, and the inverse still undoes the forward to float32 precision."""
    torch.manual_seed(0)
    model = Flow(SMALL[kind])
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.rand(16, 1, 4, 4)
    for _ in range(3):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model.loss({"x": x})["loss"]
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        loss.backward()
        opt.step(), opt.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        y = model.dequantize(x)[0]
        z, logdet = model.flow(y)
        assert z.dtype == logdet.dtype == torch.float32
        assert (model.flow.inverse(z) - y).abs().max().item() < 1e-3


def test_a_short_run_on_mnist_lowers_the_test_bits_per_dim():
    """120 Adam steps of a small RealNVP on 2,000 MNIST images: test bits/dim falls from about 28
    (an identity flow after the logit puts N(0, 1) on logits that are mostly near -14) to below
    2.6 (measured 2.25-2.32 at seeds 0-4)."""
    from deepzoo.data.mnist import load_mnist

    train = load_mnist("train").tensors["x"][:2000]
    test = load_mnist("test").tensors["x"][:500]
    torch.manual_seed(0)
    model = Flow(FlowConfig(kind="realnvp", depth=2, hidden=16, blocks=1, scales=2))
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    with torch.no_grad():
        before = model.nll_bits(test, torch.Generator().manual_seed(0)).mean().item()
    for _ in range(120):
        loss = model.loss({"x": train[torch.randint(0, 2000, (64,))]})["loss"]
        loss.backward()
        opt.step(), opt.zero_grad()
    with torch.no_grad():
        after = model.nll_bits(test, torch.Generator().manual_seed(0)).mean().item()
    print(f"bits/dim {before:.3f} -> {after:.3f}")
    assert before > 20 and after < 2.6, (before, after)
