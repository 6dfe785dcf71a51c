import math

import pytest
import torch

from deepzoo.nn.dropout import Dropout, dropout
from deepzoo.nn.init import fans, kaiming_normal_, xavier_normal_


def _depth_profile(init, activation, depth=40, width=256):
    generator = torch.Generator().manual_seed(0)
    h = torch.randn(2048, width, generator=generator)
    second_moments = []
    for _ in range(depth):
        w = torch.empty(width, width)
        init(w, generator=generator)
        h = activation(h @ w.T)
        second_moments.append(h.pow(2).mean().item())
    return second_moments


def test_kaiming_keeps_relu_activations_at_scale_through_40_layers():
    """Kaiming keeps E q_l = q_0 through ReLU layers, but log(q_L / q_0) random-walks with a
    variance of about 5 L / n (Hanin & Rolnick, 2018: 5 x 40 / 256, sd 0.88; measured over seeds
    0-39: sd 0.82, ratios 0.20-5.0), so the bound is 4 sd; a wrong gain shrinks or grows it
    geometrically (a missing factor 2: 2^-40)."""
    moments = _depth_profile(kaiming_normal_, torch.relu)
    assert abs(math.log(moments[-1] / moments[0])) < 4 * math.sqrt(5 * 40 / 256)
    shrinking = _depth_profile(lambda w, generator: w.normal_(0, 0.01, generator=generator), torch.relu)
    assert shrinking[-1] < 1e-30  # the notes' "small random numbers" vanish


def test_xavier_keeps_tanh_activations_alive_through_40_layers():
    moments = _depth_profile(xavier_normal_, torch.tanh)
    # tanh shrinks the second moment slowly (about 1/depth), never geometrically: over the last
    # ten layers by at most 5% a layer on average (measured for seeds 0-9: 0.7-3.6%; one layer's
    # ratio alone is noisy, 0.92-1.07)
    assert moments[-1] > 5e-3 and (moments[-1] / moments[-11]) ** 0.1 > 0.95
    too_small = _depth_profile(lambda w, generator: w.normal_(0, 0.01, generator=generator), torch.tanh)
    assert too_small[-1] < 1e-20


def test_fans_refuse_a_vector():
    with pytest.raises(ValueError, match="2\\+ dimensions"):
        fans(torch.empty(5))


def test_init_variances_match_their_formulas():
    w = torch.empty(400, 100, 3, 3)
    fan_in, fan_out = fans(w)
    assert (fan_in, fan_out) == (900, 3600)
    assert kaiming_normal_(w).var().item() == pytest.approx(2 / fan_in, rel=0.02)
    assert xavier_normal_(w).var().item() == pytest.approx(2 / (fan_in + fan_out), rel=0.02)
    torch.nn.init.kaiming_normal_(w, nonlinearity="relu")
    assert w.var().item() == pytest.approx(2 / fan_in, rel=0.02)  # torch's agrees


@pytest.mark.parametrize("init", [kaiming_normal_, xavier_normal_])
def test_initializations_draw_from_the_generator_they_are_given(init):
    draw = lambda seed: init(torch.empty(30, 20), generator=torch.Generator().manual_seed(seed))  # noqa: E731
    torch.manual_seed(0)
    first = draw(1)
    torch.manual_seed(5)  # the global stream plays no part
    assert torch.equal(draw(1), first) and not torch.equal(draw(2), first)


def test_inverted_dropout_keeps_the_expectation_and_drops_a_fraction_p():
    x = torch.full((200_000,), 3.0)
    y = dropout(x, 0.3, training=True, generator=torch.Generator().manual_seed(0))
    assert (y == 0).float().mean().item() == pytest.approx(0.3, abs=0.005)
    # kept units are x / (1 - p) to float32 rounding (2 ulp), not merely close to it
    torch.testing.assert_close(y[y != 0], torch.full_like(y[y != 0], 3.0 / 0.7), rtol=2.4e-7, atol=0)
    assert y.mean().item() == pytest.approx(3.0, rel=0.01)


def test_dropout_is_the_identity_in_eval_and_rejects_bad_p():
    layer = Dropout(0.5).eval()
    x = torch.randn(10)
    assert torch.equal(layer(x), x)
    assert torch.equal(dropout(x, 0.5, training=False), x)
    for p in (1.0, -0.1):  # p = 1 would divide by zero
        with pytest.raises(ValueError, match="dropout probability"):
            Dropout(p)
        with pytest.raises(ValueError, match="dropout probability"):
            dropout(x, p, training=True)
