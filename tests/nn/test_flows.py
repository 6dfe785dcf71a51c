"""Flow layers: each inverts its forward pass, and its logdet is log |det| of the Jacobian that
autograd computes; ActNorm's data-dependent init, the LU 1x1 convolution's determinant, the
squeeze's index map and the priors against closed forms."""

import math

import pytest
import torch
from torch import nn

from deepzoo.nn.flows import (
    ActNorm,
    Coupling,
    DiagonalScaling,
    FlowSequence,
    InvertibleConv1x1,
    LogitTransform,
    MultiScale,
    Shift,
    Squeeze,
    alternating_mask,
    channel_mask,
    checkerboard_mask,
    sample_standard_logistic,
    standard_logistic_log_prob,
    standard_normal_log_prob,
)


def _conv_net(channels):
    return nn.Sequential(
        nn.Conv2d(channels, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 2 * channels, 3, padding=1)
    )


def _mlp(dim, out):
    return nn.Sequential(nn.Linear(dim, 16), nn.Tanh(), nn.Linear(16, out))


def _perturbed(layer):
    """The layer in float64 with every parameter moved off its (often identity) initial value."""
    layer = layer.double()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return layer


LAYERS = {
    "additive": lambda: (Coupling(alternating_mask(7, 0), _mlp(4, 3), "additive"), (7,)),
    "realnvp-vector": lambda: (Coupling(alternating_mask(6, 1), _mlp(3, 6), "realnvp"), (6,)),
    "realnvp-checkerboard": lambda: (
        Coupling(checkerboard_mask(4, 4, 0), _conv_net(2), "realnvp", 2),
        (2, 4, 4),
    ),
    "glow-channel": lambda: (Coupling(channel_mask(4, 1), _conv_net(2), "glow"), (4, 2, 2)),
    "diagonal-scaling": lambda: (DiagonalScaling((6,)), (6,)),
    "actnorm": lambda: (ActNorm(3), (3, 2, 2)),
    "invconv-lu": lambda: (InvertibleConv1x1(3), (3, 2, 2)),
    "invconv-plain": lambda: (InvertibleConv1x1(3, lu=False), (3, 2, 2)),
    "squeeze": lambda: (Squeeze(), (2, 4, 4)),
    "logit": lambda: (LogitTransform(0.05), (1, 3, 3)),
    "shift": lambda: (Shift(-0.5), (5,)),
    "multiscale": lambda: (
        MultiScale(
            (1, 4, 4),
            [FlowSequence([Squeeze(), Coupling(channel_mask(4, 0), _conv_net(2), "realnvp")])],
            FlowSequence([Squeeze(), ActNorm(8), InvertibleConv1x1(8)]),
        ),
        (1, 4, 4),
    ),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_inverse_undoes_forward_and_logdet_is_the_jacobians(name):
    torch.manual_seed(0)
    layer, shape = LAYERS[name]()
    layer = _perturbed(layer).eval()
    x = torch.rand(3, *shape, dtype=torch.float64) * 0.8 + 0.1  # inside (0, 1) for the logit
    z, logdet = layer(x)
    assert z.dtype == torch.float64 and logdet.shape == (3,)
    assert torch.allclose(layer.inverse(z), x, atol=1e-10, rtol=0)
    assert z[0].shape == layer.out_shape(shape)
    for b in range(3):
        jacobian = torch.autograd.functional.jacobian(lambda a: layer(a.unsqueeze(0))[0].flatten(), x[b])
        jacobian = jacobian.reshape(z[b].numel(), x[b].numel())
        assert logdet[b].item() == pytest.approx(torch.linalg.slogdet(jacobian)[1].item(), abs=1e-9)


def test_couplings_start_as_the_identity_when_their_last_layer_is_zero():
    x = torch.randn(4, 6)
    for kind, out in (("realnvp", 6), ("additive", 3)):
        layer = Coupling(alternating_mask(6, 0), _zero_last(_mlp(3, out)), kind)
        z, logdet = layer(x)
        assert torch.equal(z, x) and torch.equal(logdet, torch.zeros(4))


@pytest.mark.parametrize("kind", ["additive", "realnvp", "glow"])
def test_a_split_coupling_is_its_equations(kind):
    """Features 1, 3, 5 pass and feed the network; with (s_raw, t) its two output halves,
    features 0, 2, 4 move: additive x + m; realnvp x exp(scale tanh s_raw) + t, logdet sum of
    the log-scales; glow (x + t) sigmoid(s_raw + 2), logdet sum log sigmoid(s_raw + 2)."""
    torch.manual_seed(0)
    layer = _perturbed(Coupling(alternating_mask(6, 1), _mlp(3, 3 if kind == "additive" else 6), kind))
    with torch.no_grad():
        layer.net[-1].weight.mul_(8)  # raw log-scales of order 1, where tanh is not the identity
        if kind == "realnvp":
            layer.scale.copy_(torch.tensor([0.5, 1.5, 2.0], dtype=torch.float64))
    x = torch.randn(4, 6, dtype=torch.float64)
    passing, moving = x[:, 1::2], x[:, 0::2]
    out = layer.net(passing)
    if kind == "additive":
        moved, logdet = moving + out, torch.zeros(4, dtype=torch.float64)
    else:
        s_raw, t = out.chunk(2, dim=1)
        assert s_raw.abs().max() > 1
        if kind == "realnvp":
            s = layer.scale * torch.tanh(s_raw)
            moved = moving * s.exp() + t
        else:
            s = torch.nn.functional.logsigmoid(s_raw + 2)
            moved = (moving + t) * torch.sigmoid(s_raw + 2)
        logdet = s.sum(1)
    z, ld = layer(x)
    assert torch.allclose(z[:, 1::2], passing, atol=0) and torch.allclose(z[:, 0::2], moved, atol=1e-12)
    assert torch.allclose(ld, logdet, atol=1e-12)


def test_a_checkerboard_realnvp_coupling_has_one_scale_per_channel():
    """RealNVP's checkerboard keeps x's shape: s = scale_c tanh(s_raw) (1 - b), t (1 - b), with a
    scale for each of the `channels` channels (the mask itself has one)."""
    torch.manual_seed(0)
    mask = checkerboard_mask(4, 4, 0).double()
    layer = _perturbed(Coupling(checkerboard_mask(4, 4, 0), _conv_net(3), "realnvp", channels=3))
    assert layer.scale.shape == (3,)
    with torch.no_grad():
        layer.net[-1].weight.mul_(8)
        layer.scale.copy_(torch.tensor([0.5, 1.5, 2.0], dtype=torch.float64))
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    s_raw, t = layer.net(x * mask).chunk(2, dim=1)
    s = layer.scale.view(1, 3, 1, 1) * torch.tanh(s_raw) * (1 - mask)
    z, ld = layer(x)
    torch.testing.assert_close(z, x * s.exp() + t * (1 - mask), rtol=0, atol=1e-12)
    torch.testing.assert_close(ld, s.sum((1, 2, 3)), rtol=0, atol=1e-12)


def _zero_last(net):
    nn.init.zeros_(net[-1].weight), nn.init.zeros_(net[-1].bias)
    return net


@pytest.mark.parametrize("mode", ["masked", "split"])
def test_a_coupling_leaves_the_masked_part_unchanged(mode):
    torch.manual_seed(0)
    if mode == "masked":
        mask, layer = checkerboard_mask(4, 4, 1), Coupling(checkerboard_mask(4, 4, 1), _conv_net(1), "glow")
    else:
        mask, layer = channel_mask(4, 0), Coupling(channel_mask(4, 0), _conv_net(2), "glow")
    layer = _perturbed(layer)
    x = torch.randn(2, mask.shape[1], 4, 4, dtype=torch.float64)
    z, _ = layer(x)
    assert torch.equal(z * mask, x * mask) and not torch.allclose(z, x)


class _Scattered(nn.Module):
    """A masked-mode network built from a split-mode one: it reads the passing channels of b * x
    and writes its (s_raw, t) for the moving channels into C-channel tensors (zero elsewhere)."""

    def __init__(self, net, passing, moving, channels):
        super().__init__()
        self.net, self.passing, self.moving, self.channels = net, passing, moving, channels

    def forward(self, x):
        out = self.net(x[:, self.passing])
        halves = []
        for part in out.chunk(2, dim=1):
            full = x.new_zeros(len(x), self.channels, *x.shape[2:])
            full[:, self.moving] = part
            halves.append(full)
        return torch.cat(halves, dim=1)


@pytest.mark.parametrize("kind", ["realnvp", "glow"])
def test_split_and_masked_couplings_are_the_same_map(kind):
    """A channel mask splits x by index; a checkerboard keeps x's shape and masks it. Written as
    the masked form, the split layer must give the same z and logdet."""
    torch.manual_seed(0)
    mask = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0]).view(1, 5, 1, 1)
    split = _perturbed(Coupling(mask, nn.Conv2d(2, 6, 3, padding=1), kind))
    masked = Coupling(mask.expand(1, 5, 2, 3), _Scattered(split.net, [0, 3], [1, 2, 4], 5), kind, 5).double()
    assert split.split and not masked.split
    if kind == "realnvp":
        with torch.no_grad():
            masked.scale.copy_(torch.tensor([9.0, 0.7, 1.3, 9.0, 0.4]))
            split.scale.copy_(torch.tensor([0.7, 1.3, 0.4]))
    x = torch.randn(3, 5, 2, 3, dtype=torch.float64)
    (z_split, ld_split), (z_masked, ld_masked) = split(x), masked(x)
    assert torch.allclose(z_split, z_masked, atol=1e-12) and torch.allclose(ld_split, ld_masked, atol=1e-12)


def test_masks_partition_the_features():
    assert alternating_mask(5, 0).tolist() == [[1, 0, 1, 0, 1]]
    assert (checkerboard_mask(3, 3, 0) + checkerboard_mask(3, 3, 1)).eq(1).all()
    assert checkerboard_mask(2, 2, 0).flatten().tolist() == [1, 0, 0, 1]
    assert channel_mask(4, 1).flatten().tolist() == [0, 0, 1, 1]


def test_actnorm_data_dependent_init_standardizes_the_first_batch_then_stays():
    torch.manual_seed(0)
    layer = ActNorm(3)
    x = torch.randn(64, 3, 5, 5) * torch.tensor([0.5, 2.0, 7.0]).view(1, 3, 1, 1) + torch.tensor(
        [1.0, -3.0, 4.0]
    ).view(1, 3, 1, 1)
    z, logdet = layer(x)
    assert torch.allclose(z.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(z.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-5)
    assert logdet[0].item() == pytest.approx(25 * layer.log_scale.sum().item())
    before = {k: v.clone() for k, v in layer.state_dict().items()}  # a state dict shares storage
    layer(3 * x + 1)  # a second batch does not initialize again
    assert all(torch.equal(before[k], v) for k, v in layer.state_dict().items())
    fresh = ActNorm(3)
    fresh.load_state_dict(before)  # nor does a loaded layer
    assert torch.equal(fresh(x)[0], layer(x)[0])


def test_actnorm_in_eval_mode_does_not_initialize():
    layer = ActNorm(2).eval()
    x = torch.randn(4, 2, 3, 3)
    assert torch.equal(layer(x)[0], x) and not layer.initialized


def test_lu_convolutions_logdet_is_the_weights_slogdet_times_positions():
    torch.manual_seed(0)
    layer = _perturbed(InvertibleConv1x1(5))
    weight = layer.weight()
    assert layer.log_abs_det().item() == pytest.approx(torch.linalg.slogdet(weight)[1].item(), abs=1e-12)
    _, logdet = layer(torch.randn(2, 5, 3, 4, dtype=torch.float64))
    assert logdet[0].item() == pytest.approx(12 * torch.linalg.slogdet(weight)[1].item(), abs=1e-10)
    fresh = InvertibleConv1x1(5)  # starts as a rotation
    assert torch.allclose(fresh.weight() @ fresh.weight().T, torch.eye(5), atol=1e-5)


def test_the_lu_factors_rebuild_the_initial_rotation():
    """W = P L (U + diag(sign exp(log_s))) starts as the rotation that lu=False learns directly,
    drawn from the same generator (so P is in the product, not only in the factorization)."""
    seeds = (s for s in range(3, 103) if not torch.equal(_lu(s).permutation, torch.eye(5)))
    seed = next(seeds)  # the first seed whose pivoting permutes (most do)
    plain = InvertibleConv1x1(5, lu=False, generator=torch.Generator().manual_seed(seed))
    assert torch.allclose(_lu(seed).weight(), plain.weight(), atol=1e-5)


def _lu(seed):
    return InvertibleConv1x1(5, generator=torch.Generator().manual_seed(seed))


def test_squeeze_puts_each_2x2_patch_into_channels():
    x = torch.arange(2 * 4 * 6, dtype=torch.float64).view(1, 2, 4, 6)
    z, _ = Squeeze()(x)
    for c in range(2):
        for i in range(2):
            for j in range(3):
                for di in range(2):
                    for dj in range(2):
                        assert z[0, 4 * c + 2 * di + dj, i, j] == x[0, c, 2 * i + di, 2 * j + dj]


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="even"):
        Squeeze()(torch.zeros(1, 1, 3, 4))
    with pytest.raises(ValueError, match="even"):
        Squeeze()(torch.zeros(1, 1, 4, 3))
    with pytest.raises(ValueError, match="coupling kind"):
        Coupling(alternating_mask(4, 0), nn.Identity(), "spline")
    with pytest.raises(ValueError, match="alpha"):
        LogitTransform(0.5)
    with pytest.raises(ValueError, match="even number of channels"):
        MultiScale((3, 2, 2), [FlowSequence([])], FlowSequence([]))


def test_an_affine_flow_of_a_gaussian_has_the_gaussians_density():
    """ActNorm then a 1x1 convolution: z = A (x + b) with A = W diag(s), so under z ~ N(0, I),
    x ~ N(-b, A^-1 A^-T) exactly."""
    torch.manual_seed(0)
    flow = _perturbed(FlowSequence([ActNorm(3), InvertibleConv1x1(3)])).eval()
    x = torch.randn(10, 3, 1, 1, dtype=torch.float64)
    z, logdet = flow(x)
    log_p = standard_normal_log_prob(z) + logdet
    act, conv = flow.layers
    with torch.no_grad():
        a_inv = torch.linalg.inv(conv.weight() @ torch.diag(act.log_scale.exp()))
        gaussian = torch.distributions.MultivariateNormal(-act.bias, covariance_matrix=a_inv @ a_inv.T)
        assert torch.allclose(log_p, gaussian.log_prob(x.flatten(1)), atol=1e-10)


def test_a_coupling_flows_density_integrates_to_one():
    """p(x) = N(f(x)) |det f'(x)| of two 2-d affine couplings, summed over a fine grid. The grid's
    box holds f^-1 of the disk |z| <= 6 (f is a homeomorphism, so the box bounds the preimage of its
    boundary circle): all but P(|z| > 6) = e^-18 of the mass, whatever the random flow."""
    torch.manual_seed(0)
    flow = _perturbed(
        FlowSequence([Coupling(alternating_mask(2, i % 2), _mlp(1, 2), "realnvp") for i in range(2)])
    ).eval()
    angle = torch.linspace(0, 2 * math.pi, 3601, dtype=torch.float64)
    with torch.no_grad():
        edge = flow.inverse(6 * torch.stack([angle.cos(), angle.sin()], dim=1))
    lo, hi = edge.min(0).values - 0.5, edge.max(0).values + 0.5
    axes = [torch.arange(a, b, 0.03, dtype=torch.float64) for a, b in zip(lo.tolist(), hi.tolist())]
    grid = torch.cartesian_prod(*axes)
    with torch.no_grad():
        z, logdet = flow(grid)
        density = (standard_normal_log_prob(z) + logdet).exp()
    assert (density.sum() * 0.03**2).item() == pytest.approx(1.0, abs=2e-3)


def test_logistic_samples_stay_finite_at_the_ends_of_the_uniform(monkeypatch):
    """u = 0 (which torch.rand can return) and u -> 1 would give -inf and +inf: u is clamped to
    [1e-7, 1 - 1e-7] (float32: 1 - 1.2e-7), so z stays within about +-log(1e7)."""
    import deepzoo.nn.flows as flows

    monkeypatch.setattr(flows, "rand", lambda shape, *a, **k: torch.tensor([0.0, 1.0 - 2**-24, 0.5]))
    z = sample_standard_logistic((3,))
    assert z.isfinite().all() and z[2] == 0
    assert z[0].item() == pytest.approx(-math.log(1e7 - 1), rel=1e-3) and 15.9 < z[1].item() < 16.2


def test_priors_match_their_closed_forms():
    z = torch.randn(5, 7, dtype=torch.float64)
    normal = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(1)
    assert torch.allclose(standard_normal_log_prob(z), normal)
    logistic = (-z - 2 * torch.nn.functional.softplus(-z)).sum(1)  # log sigmoid'(z)
    assert torch.allclose(standard_logistic_log_prob(z), logistic)
    draws = sample_standard_logistic((200_000,), torch.Generator().manual_seed(0))
    assert draws.isfinite().all()
    # mean 0, variance pi^2 / 3; the standard errors are 0.004 and 0.017
    assert abs(draws.mean().item()) < 0.02 and draws.var().item() == pytest.approx(math.pi**2 / 3, abs=0.08)
