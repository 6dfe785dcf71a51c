"""PixelCNN, Gated PixelCNN and PixelRNN: causal in raster order, the blind spot (plain) and its
absence (gated), the parallel NLL equal to the chain rule's sum, and sampling with the cache equal
to sampling without it, each draw with the likelihood the model reports."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from deepzoo.models.pixelcnn import PixelCNN, PixelCNNConfig

KINDS = ("pixelcnn", "gated", "pixelrnn")


def _model(kind, size=8, layers=3, **kw):
    torch.manual_seed(0)
    config = PixelCNNConfig(kind=kind, hidden=8, layers=layers, image_shape=(1, size, size), **kw)
    return PixelCNN(config).double().eval()


def _dependencies(model, size, y=None):
    """(P, P) boolean over raster positions: logit p depends on pixel q. The Jacobian is taken
    with every ReLU replaced by softplus (a copy of the model), so no path is cut by units that
    happen to be off at the random input: what remains is the wiring the masks allow."""
    smooth = copy.deepcopy(model)
    for module in list(smooth.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, torch.nn.ReLU):
                setattr(module, child_name, torch.nn.Softplus())
    x = torch.bernoulli(torch.full((1, 1, size, size), 0.5, dtype=torch.float64))
    # (H, W, 1, 1, H, W)
    jacobian = torch.autograd.functional.jacobian(lambda a: smooth.logits(a, y)[0, 0], x)
    return jacobian.reshape(size * size, size * size) != 0


@pytest.mark.parametrize("kind", KINDS)
def test_every_logit_depends_only_on_earlier_pixels(kind):
    model = _model(kind, num_classes=10 if kind == "gated" else 0)
    y = torch.tensor([4]) if kind == "gated" else None
    depends = _dependencies(model, 8, y)
    assert not torch.triu(depends).any()  # q >= p: never
    assert depends[9, 8] and depends[9, 0]  # the pixel to the left and the one above-left


def test_plain_pixelcnn_has_the_blind_spot_and_gated_does_not():
    """Position (6, 5) of a 12x12 image, 5 layers: (5, 9), one row up and four columns right, is
    in reach of either stack's size but the plain stack never sees it (it sees (5, 6)); the gated
    one sees it and every earlier pixel of the rows i - 2 .. i within 4 columns."""
    i, j, size = 6, 5, 12
    plain = _dependencies(_model("pixelcnn", size, layers=5), size)[i * size + j]
    gated = _dependencies(_model("gated", size, layers=5), size)[i * size + j]
    assert not plain[(i - 1) * size + j + 4] and plain[(i - 1) * size + j + 3]
    for k in range(i - 2, i + 1):
        for m in range(j - 4, j + 5):
            if (k, m) < (i, j):
                assert gated[k * size + m], (k, m)


@pytest.mark.parametrize("kind", KINDS)
def test_the_parallel_nll_is_the_chain_rules_sum_of_pixel_conditionals(kind):
    """log p(x) from one pass equals sum_p log p(x_p | x_<p), each term from a pass where the
    pixels from p on are replaced by noise (which the logit at p must not see)."""
    model = _model(kind, size=6)
    x = torch.bernoulli(torch.full((2, 1, 6, 6), 0.4, dtype=torch.float64))
    total = torch.zeros(2, dtype=torch.float64)
    for p in range(36):
        i, j = divmod(p, 6)
        noisy = x.clone().flatten(1)
        noisy[:, p:] = torch.rand(2, 36 - p, dtype=torch.float64)
        logit = model.logits(noisy.view_as(x))[:, 0, i, j]
        total -= F.binary_cross_entropy_with_logits(logit, x[:, 0, i, j], reduction="none")
    assert torch.allclose(model.log_prob(x), total, atol=1e-10)


@pytest.mark.parametrize("kind", KINDS)
def test_cached_sampling_draws_what_uncached_sampling_draws_with_the_reported_likelihood(kind):
    model = _model(kind, size=7, num_classes=10 if kind == "gated" else 0)
    labels = torch.tensor([1, 5, 9]) if kind == "gated" else None
    cached, log_p = model.sample_with_log_prob(3, generator=torch.Generator().manual_seed(1), labels=labels)
    plain, log_p_plain = model.sample_with_log_prob(
        3, generator=torch.Generator().manual_seed(1), labels=labels, cache=False
    )
    assert torch.equal(cached, plain)
    assert torch.allclose(log_p, log_p_plain, atol=1e-10)
    assert torch.allclose(log_p, model.log_prob(cached, labels), atol=1e-10)
    assert set(cached.unique().tolist()) <= {0.0, 1.0}


def test_cached_pixelcnn_sampling_crops_to_exactly_the_rows_each_output_row_sees():
    """A plain PixelCNN's cached sampling runs only the receptive_rows rows above the current
    one: on an 8 x 8 image with 4 rows seen, rows 5-7 leave out the top 1-3 rows; a crop one row
    shorter would change their logits, one row longer would only cost time."""
    model = _model("pixelcnn", size=8, layers=1)
    assert model.receptive_rows == 4
    cached, log_p = model.sample_with_log_prob(4, generator=torch.Generator().manual_seed(2))
    plain, log_p_plain = model.sample_with_log_prob(
        4, generator=torch.Generator().manual_seed(2), cache=False
    )
    assert torch.equal(cached, plain)
    torch.testing.assert_close(log_p, log_p_plain, rtol=0, atol=1e-10)
    torch.testing.assert_close(log_p, model.log_prob(cached), rtol=0, atol=1e-10)


def test_class_conditioning_changes_the_logits():
    model = _model("gated", num_classes=10)
    x = torch.bernoulli(torch.full((1, 1, 8, 8), 0.5, dtype=torch.float64))
    with torch.no_grad():
        for layer in model.layers:
            layer.label.weight.normal_()
    a, b = model.logits(x, torch.tensor([0])), model.logits(x, torch.tensor([1]))
    assert not torch.allclose(a, b)


def test_training_binarizes_and_evaluation_refuses_grey_images():
    model = _model("pixelcnn").float()
    grey = torch.full((2, 1, 8, 8), 0.3)
    model.train()
    assert torch.isfinite(model.loss({"x": grey})["loss"])
    model.eval()
    with pytest.raises(ValueError, match="binary"):
        model.loss({"x": grey})
    assert model.loss({"x": (grey > 0.2).float()})["nll"] > 0
    model.train()  # the training loss is -log p of a fresh Bernoulli draw of the grey levels
    torch.manual_seed(5)
    loss = model.loss({"x": grey})["loss"]
    torch.manual_seed(5)
    drawn = torch.bernoulli(grey)
    assert 0 < drawn.mean() < 1
    with torch.no_grad():
        torch.testing.assert_close(loss.detach(), -model.log_prob(drawn).mean())


def test_the_blocks_and_the_head_are_the_papers_layers():
    """PixelCNN's residual block: ReLU, 1x1 (to h / 2), ReLU, 3x3 type B, ReLU, 1x1 (back to h),
    added to its input; the output head of every kind: ReLU, 1x1, ReLU, 1x1 to one logit."""
    from torch import nn

    from deepzoo.nn.masked import MaskedConv2d

    model = _model("pixelcnn")
    block = model.layers[0]
    kinds = [nn.ReLU, nn.Conv2d, nn.ReLU, MaskedConv2d, nn.ReLU, nn.Conv2d]
    assert [type(m) for m in block.body] == kinds
    assert [(m.in_channels, m.out_channels) for m in block.body if isinstance(m, nn.Conv2d)] == [
        (8, 4), (4, 4), (4, 8)
    ]  # fmt: skip
    x = torch.randn(2, 8, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(block(x), x + block.body(x))
    for kind in KINDS:
        head = _model(kind).head
        assert [type(m) for m in head] == [nn.ReLU, nn.Conv2d, nn.ReLU, nn.Conv2d]
        assert head[-1].out_channels == 1


def test_bad_configs_are_clear_errors():
    with pytest.raises(ValueError, match="kind"):
        PixelCNNConfig(kind="pixelcnn++")
    with pytest.raises(ValueError, match="gated"):
        PixelCNNConfig(kind="pixelcnn", num_classes=10)
    with pytest.raises(ValueError, match="odd"):
        PixelCNNConfig(kernel=4)


@pytest.mark.parametrize("kind", KINDS)
def test_forced_bf16_training_step_is_finite_and_moves_the_weights(kind):
    torch.manual_seed(0)
    model = PixelCNN(PixelCNNConfig(kind=kind, hidden=8, layers=2, image_shape=(1, 8, 8)))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    before = [p.detach().clone() for p in model.parameters()]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model.loss({"x": torch.rand(8, 1, 8, 8)})["loss"]
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize("kind", KINDS)
def test_a_short_run_on_mnist_lowers_the_test_nll(kind):
    """100 Adam steps (lr 3e-3, batch 32) of a small model on 2,000 dynamically binarized MNIST
    images: test NLL falls from about 543 nats (log 2 per pixel) to below 140 (measured 105-120
    at seeds 0-4)."""
    from deepzoo.data.mnist import load_mnist

    train = load_mnist("train").tensors["x"][:2000]
    test = torch.bernoulli(load_mnist("test").tensors["x"][:200], generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = PixelCNN(PixelCNNConfig(kind=kind, hidden=16, layers=2))
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(100):
        model.loss({"x": train[torch.randint(0, 2000, (32,))]})["loss"].backward()
        opt.step(), opt.zero_grad()
    model.eval()
    with torch.no_grad():
        nll = -model.log_prob(test).mean().item()
    print(f"{kind}: test nll {nll:.1f}")
    assert nll < 140, (kind, nll)


@pytest.mark.parametrize("kernel", [3, 5])
def test_receptive_rows_cover_what_the_plain_pixelcnn_sees(kernel):
    model = _model("pixelcnn", size=16, layers=3, kernel=kernel)
    depends = _dependencies(model, 16)
    i, j = 15, 8
    rows_seen = {q // 16 for q in torch.nonzero(depends[i * 16 + j]).flatten().tolist()}
    assert min(rows_seen) == i - model.receptive_rows == i - (3 + 3 * (kernel // 2))


@pytest.mark.parametrize("cache", [True, False])
def test_samples_draw_each_pixel_with_the_models_probability(cache):
    """With the head's last layer zero and its bias logit(0.9), every pixel is 1 w.p. 0.9: the
    share of ones in 8 x 64 pixels is within 5 standard errors (0.066) of 0.9, and log p of each
    sample is the sum of its pixels' log-probabilities."""
    model = _model("pixelcnn")
    last = model.head[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(math.log(0.9 / 0.1))
    x, log_p = model.sample_with_log_prob(8, generator=torch.Generator().manual_seed(0), cache=cache)
    assert x.mean().item() == pytest.approx(0.9, abs=5 * (0.09 / 512) ** 0.5)
    ones = x.flatten(1).sum(1).double()
    torch.testing.assert_close(log_p, ones * math.log(0.9) + (64 - ones) * math.log(0.1))


def test_a_conditional_model_hears_the_labels_in_training_and_sampling():
    """The loss reads batch["y"]; samples default to the digits 0..9 repeating."""
    model = _model("gated", num_classes=10)
    heard = []
    log_prob = model.log_prob
    model.log_prob = lambda x, y=None: heard.append(y) or log_prob(x, y)
    y = torch.tensor([4, 2])
    model.loss({"x": torch.ones(2, 1, 8, 8, dtype=torch.float64), "y": y})
    assert torch.equal(heard[0], y)
    cached_logit = model._cached_logit
    model._cached_logit = lambda x, y, i, j, state: heard.append(y) or cached_logit(x, y, i, j, state)
    model.sample(12)
    assert heard[1].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
