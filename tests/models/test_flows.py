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
    """Zero-initialized couplings: a fresh NICE is the identity, so log p(y) is the standard
    logistic's density of y; a fresh RealNVP after centring is the identity, so log p(y) =
    log N(y - 1/2); a fresh Glow's couplings each scale their half by sigmoid(2) (its ActNorm is
    not yet initialized, its 1x1 convolutions are rotations), so logdet = (D_scaled) log sigmoid(2)."""
    y = torch.rand(5, 1, 4, 4, dtype=torch.float64)
    nice = Flow(SMALL["nice"]).double().eval()  # zero last layers and log-scales: the identity
    logistic = torch.distributions.TransformedDistribution(
        torch.distributions.Uniform(torch.tensor(0.0, dtype=torch.float64), 1.0),
        [torch.distributions.SigmoidTransform().inv],
    )
    assert torch.allclose(nice.log_prob(y), logistic.log_prob(y).flatten(1).sum(1), atol=1e-10)
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
    y, log_q_of_y = model.dequantize(x, torch.Generator().manual_seed(1))
    assert torch.equal(torch.floor(y * 256), (x * 255).round())  # y stays in its integer's bin
    # the same draw: the dequantizer sees k / 255 = x, and y = (k + u) / 256
    assert torch.allclose(y, ((x * 255).round() + u) / 256, atol=1e-12)
    assert torch.allclose(log_q_of_y, log_q, atol=1e-12)


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
    with pytest.raises(ValueError, match="divisible by 4"):
        FlowConfig(kind="realnvp", scales=2, image_shape=(1, 8, 6))
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


def test_the_coupling_networks_are_the_papers():
    """NICE: Linear-ReLU layers, then a linear layer; RealNVP: conv3x3, residual blocks
    h + conv3x3(relu(conv3x3(relu(h)))), relu, conv3x3; Glow: conv3x3, ReLU, conv1x1, ReLU,
    conv3x3. Written out with the networks' own layers (their zero last layers made random)."""
    from torch import nn
    from torch.nn import functional as F

    from deepzoo.models.flows import ResNetConditioner, glow_conditioner, nice_mlp

    torch.manual_seed(0)
    mlp = nice_mlp(6, 5, 2, 4)
    nn.init.normal_(mlp[-1].weight)
    x = torch.randn(3, 6)
    linears = [m for m in mlp if isinstance(m, nn.Linear)]
    h = x
    for linear in linears[:-1]:
        h = F.relu(linear(h))
    torch.testing.assert_close(mlp(x), linears[-1](h))
    resnet = ResNetConditioner(2, 4, 2, 6)
    nn.init.normal_(resnet.out.weight)
    x = torch.randn(3, 2, 5, 5)
    h = resnet.inp(x)
    for block in resnet.blocks:
        first, second = (m for m in block if isinstance(m, nn.Conv2d))
        h = h + second(F.relu(first(F.relu(h))))
    torch.testing.assert_close(resnet(x), resnet.out(F.relu(h)))
    glow = glow_conditioner(2, 4, 6)
    assert [m.kernel_size for m in glow if isinstance(m, nn.Conv2d)] == [(3, 3), (1, 1), (3, 3)]
    assert [type(m) for m in glow] == [nn.Conv2d, nn.ReLU, nn.Conv2d, nn.ReLU, nn.Conv2d]


@pytest.mark.parametrize("kind", sorted(SMALL))
def test_every_value_is_transformed_by_some_coupling(kind):
    """Consecutive couplings of a kind alternate their masks, so no value only passes through:
    in a trained-looking flow, each z_i depends on more than the x_i it comes from (NICE: before
    the diagonal scaling; the Jacobian's rows all have several nonzero entries)."""
    model = _trained_looking(SMALL[kind])
    x = model._flat(torch.rand(1, 1, 4, 4, dtype=torch.float64) * 0.9 + 0.05)
    jacobian = torch.autograd.functional.jacobian(lambda a: model.flow(a.view_as(x))[0][0], x[0])
    rows = jacobian.reshape(16, 16).abs() > 1e-12
    assert (rows.sum(1) > 1).all(), rows.sum(1)


def test_the_layouts_alternate_their_masks_and_count_the_papers_couplings():
    """Consecutive couplings of NICE (feature halves) and RealNVP (checkerboards, then channel
    halves) take complementary masks; RealNVP has 2 depth couplings per scale and depth + 1 at
    the end; each model starts with its paper's preprocessing (none, logit, centring); NICE ends
    with its diagonal scaling; a Glow level is a squeeze, then steps of ActNorm, 1x1 convolution
    and coupling."""
    from deepzoo.nn.flows import (
        ActNorm,
        Coupling,
        DiagonalScaling,
        InvertibleConv1x1,
        LogitTransform,
        Shift,
        Squeeze,
    )

    for kind, first, count in (("nice", None, 4), ("realnvp", LogitTransform, 2 * 2 * 2 + 3)):
        model = Flow(SMALL[kind])
        couplings = [m for m in model.modules() if isinstance(m, Coupling)]
        assert len(couplings) == count
        for a, b in zip(couplings, couplings[1:]):
            if a.mask.shape == b.mask.shape:
                assert torch.equal(a.mask + b.mask, torch.ones_like(a.mask)), kind
        assert first is None or isinstance(model.flow.layers[0], first)
    glow = Flow(SMALL["glow"])
    assert isinstance(glow.flow.layers[0], Shift)
    for level in [*glow.flow.layers[1].levels, glow.flow.layers[1].final]:  # squeeze, then steps
        kinds = [type(layer) for layer in level.layers]
        assert kinds == [Squeeze] + [ActNorm, InvertibleConv1x1, Coupling] * SMALL["glow"].depth
    assert len(Flow(SMALL["nice"]).flow.layers) == 1  # nothing before NICE's couplings
    assert isinstance(Flow(SMALL["nice"]).flow.layers[0].layers[-1], DiagonalScaling)  # and one after


def test_nice_scores_its_latents_under_the_standard_logistic_and_sampling_scales_by_the_temperature():
    from torch.nn import functional as F

    from deepzoo.rng import randn

    model = _trained_looking(SMALL["nice"])
    y = torch.rand(3, 1, 4, 4, dtype=torch.float64) * 0.9 + 0.05
    z, logdet = model.flow(model._flat(y))
    logistic = (-F.softplus(-z) - F.softplus(z)).sum(1)  # log sigmoid(z) + log sigmoid(-z)
    torch.testing.assert_close(model.log_prob(y), logistic + logdet)
    glow = _trained_looking(SMALL["glow"]).float()
    drawn = glow.sample(5, generator=torch.Generator().manual_seed(3), temperature=0.5)
    z = 0.5 * randn((5, 16), torch.Generator().manual_seed(3), torch.device("cpu"))
    torch.testing.assert_close(drawn, glow.flow.inverse(z).view(5, 1, 4, 4).clamp(0, 1))


@pytest.mark.parametrize("dequantization", ["uniform", "variational"])
def test_dequantization_reads_each_pixel_at_its_nearest_level(dequantization):
    """y = (k + u) / 256 with k the nearest level of x * 255: a pixel stored a rounding below or
    above k / 255 (float16 storage, a resize) still lands in [k / 256, (k + 1) / 256)."""
    model = Flow(replace(SMALL["realnvp"], dequantization=dequantization, image_shape=(1, 16, 16)))
    k = torch.arange(256).view(1, 1, 16, 16)
    exact = k / 255
    for x in (exact, torch.nextafter(exact, torch.zeros(())), torch.nextafter(exact, torch.ones(()))):
        y, _ = model.dequantize(x, torch.Generator().manual_seed(0))
        assert torch.equal((y * 256).floor().long(), k)
