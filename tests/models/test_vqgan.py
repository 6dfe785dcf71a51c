"""VQGAN: the adaptive weight, when each network gets which gradient, the frozen perceptual
network, and the tokenizer interface that stage 2 reads."""

from dataclasses import replace

import pytest
import torch
from torch import nn

from deepzoo.models.features import mnist_feature_net, perceptual_loss
from deepzoo.models.vqgan import VQGAN, VQGANConfig, adaptive_weight
from deepzoo.train import distributed
from deepzoo.train.config import TrainConfig
from deepzoo.train.step import Optimizers, named_groups

TINY = VQGANConfig(
    image_size=16, channels=(4, 8), num_codes=16, code_dim=4, disc_channels=4, disc_layers=1, disc_start=3
)


def _model(**kw) -> VQGAN:
    torch.manual_seed(0)
    return VQGAN(replace(TINY, **kw))


def _batch(n: int = 4, side: int = 16) -> dict[str, torch.Tensor]:
    return {"x": torch.rand(n, 1, side, side, generator=torch.Generator().manual_seed(1))}


class RecordingOpt:
    """Stands in for `Optimizers`: records each update's group names and the gradients of its
    loss with respect to every parameter, and changes nothing."""

    def __init__(self, model: nn.Module) -> None:
        self.names = tuple(model.param_groups())
        self.params = dict(model.named_parameters())
        self.calls: list[tuple[tuple[str, ...], dict[str, torch.Tensor]]] = []

    def update(self, names, loss):
        names = (names,) if isinstance(names, str) else tuple(names)
        wanted = {k: p for k, p in self.params.items() if p.requires_grad}
        grads = torch.autograd.grad(loss, list(wanted.values()), allow_unused=True)
        self.calls.append((names, {k: g for k, g in zip(wanted, grads) if g is not None}))
        return {}


def test_adaptive_weight_is_the_ratio_of_gradient_norms_at_the_last_layer():
    model = _model()
    x = _batch()["x"] * 2 - 1
    q, x_hat, terms = model._autoencode(x)
    g_loss = -model.discriminator(x_hat).mean()
    last = model.decoder.last.weight
    weight = adaptive_weight(terms["rec"], g_loss, last)
    # by hand: each loss's gradient at W_L through its own backward pass
    grads = []
    for loss in (terms["rec"], g_loss):
        last.grad = None
        loss.backward(retain_graph=True)
        grads.append(last.grad.clone())
    expected = grads[0].norm() / (grads[1].norm() + 1e-4)
    assert weight.item() == pytest.approx(expected.item(), rel=1e-5)
    # a loss proportional to the other: lambda = 1 / (3 + 1e-4 / ||grad||)
    g = grads[0].norm().item()
    assert adaptive_weight(terms["rec"], 3 * terms["rec"], last).item() == pytest.approx(
        g / (3 * g + 1e-4), rel=1e-5
    )
    assert not weight.requires_grad


def test_before_disc_start_the_discriminator_neither_trains_nor_shapes_the_autoencoder_gradient():
    def gradients(step: int, perturb: bool):
        model = _model()
        if perturb:
            with torch.no_grad():
                for p in model.discriminator.parameters():
                    p.add_(torch.randn_like(p))
        opt = RecordingOpt(model)
        model.train_step(_batch(), step, opt)
        return opt.calls

    before, before_perturbed = gradients(2, False), gradients(2, True)
    assert [names for names, _ in before] == [("ae",)]
    for name, grad in before[0][1].items():
        assert not name.startswith("discriminator.")
        assert torch.equal(grad, before_perturbed[0][1][name])  # D plays no part
    after, after_perturbed = gradients(3, False), gradients(3, True)
    assert [names for names, _ in after] == [("ae",), ("d",)]
    decoder = "decoder.last.weight"
    assert not torch.allclose(after[0][1][decoder], after_perturbed[0][1][decoder])  # D's gradient flows in
    assert all(name.startswith("discriminator.") for name in after[1][1])  # the D loss reaches D only


def test_after_disc_start_each_update_moves_only_its_own_parameters():
    model = _model()
    groups = named_groups(model)
    opt = Optimizers(groups, TrainConfig(lr=1e-2), distributed.setup("cpu"))
    update = opt.update
    moved: list[tuple[tuple[str, ...], set[str]]] = []
    names_of = {id(p): n for n, p in model.named_parameters()}

    def watched(names, loss):
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        out = update(names, loss)
        changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
        moved.append(((names,) if isinstance(names, str) else tuple(names), changed))
        return out

    opt.update = watched
    out = model.train_step(_batch(), 5, opt)
    assert {"loss_g", "gan_weight", "loss_d", "grad_norm_ae", "grad_norm_d"} <= out.keys()
    (ae_names, ae_moved), (d_names, d_moved) = moved
    assert ae_names == ("ae",) and d_names == ("d",)
    # (attention q/k/v wait a step: their output projection starts at zero, so does their gradient)
    assert (
        {"decoder.last.weight", "encoder.net.0.weight"} <= ae_moved <= {names_of[id(p)] for p in groups["ae"]}
    )
    # (the hinge loss's gradient at the last bias is mean(1) - mean(1) = 0 while every score is in (-1, 1))
    assert "discriminator.net.0.weight" in d_moved and d_moved <= {names_of[id(p)] for p in groups["d"]}
    assert not any(n.startswith("perceptual.") for n in ae_moved | d_moved)


def test_a_loss_trained_codebook_is_updated_with_the_autoencoder():
    model = _model(ema=False)
    opt = RecordingOpt(model)
    model.train_step(_batch(), 0, opt)
    assert opt.calls[0][0] == ("ae", "codebook") and "quantizer.codebook" in opt.calls[0][1]


def test_the_perceptual_network_is_frozen_and_zero_on_identical_images():
    model = _model().train()
    assert not model.perceptual.training and not any(m.training for m in model.perceptual.modules())
    assert not any(p.requires_grad for p in model.perceptual.parameters())
    x = _batch(side=28)["x"]
    y = x.flip(-1).requires_grad_(True)
    assert torch.equal(model.perceptual(x, x), torch.zeros(4))
    distance = model.perceptual(x, y)
    assert (distance > 0).all() and (distance <= 4 * len(model.perceptual.taps)).all()
    distance.sum().backward()
    assert y.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.perceptual.parameters())
    # its layers are a copy: training the VQGAN cannot touch the shipped network's weights
    net = mnist_feature_net()
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(model.perceptual.parameters(), net.parameters()))


def test_perceptual_distance_matches_its_formula_on_the_feature_network():
    torch.manual_seed(0)
    loss = perceptual_loss()
    x, y = torch.rand(2, 1, 28, 28), torch.rand(2, 1, 28, 28)
    body, c = mnist_feature_net().body, mnist_feature_net().config
    expected = torch.zeros(2)
    hx, hy = (x - c.input_mean) / c.input_std, (y - c.input_mean) / c.input_std
    for i, layer in enumerate(body):
        hx, hy = layer(hx.clone()), layer(hy.clone())
        if i + 1 < len(body) and isinstance(body[i + 1], nn.MaxPool2d):
            a = hx / hx.norm(dim=1, keepdim=True).clamp_min(1e-10)
            b = hy / hy.norm(dim=1, keepdim=True).clamp_min(1e-10)
            expected += ((a - b) ** 2).sum(1).mean((1, 2))
    assert loss.taps == (5, 12, 19)
    torch.testing.assert_close(loss(x, y), expected, rtol=1e-5, atol=1e-6)


def test_vqgan_is_a_tokenizer_of_its_code_grid():
    model = _model().eval()
    x = _batch()["x"]
    codes = model.encode(x)
    assert model.grid == (8, 8) and codes.shape == (4, 8, 8) and codes.dtype == torch.long
    assert 0 <= codes.min() and codes.max() < model.num_codes
    images = model.decode(codes)
    assert images.shape == x.shape and 0 <= images.min() and images.max() <= 1
    assert torch.equal(model.reconstruct(x), images)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert torch.equal(model.train().encode(x), codes)  # training mode updates nothing
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_without_perceptual_weight_no_perceptual_network_is_built():
    model = _model(perceptual_weight=0.0)
    assert model.perceptual is None
    out = model.loss(_batch())
    assert "perceptual" not in out and out["rec"] == out["l1"]


def test_a_short_run_learns_to_reconstruct():
    model = _model(disc_start=40)
    opt = Optimizers(named_groups(model), TrainConfig(lr=3e-3, betas=(0.5, 0.9)), distributed.setup("cpu"))
    x = _batch(8)
    before = (model.eval().reconstruct(x["x"]) - x["x"]).abs().mean()
    model.train()
    for step in range(60):
        out = model.train_step(x, step, opt)
    assert torch.isfinite(out["loss_d"])
    after = (model.eval().reconstruct(x["x"]) - x["x"]).abs().mean()
    assert after < 0.7 * before


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="divide"):
        VQGANConfig(image_size=20, channels=(4, 8, 8, 8))


def test_a_bf16_step_matches_the_fp32_step_to_bf16_precision():
    """Under bf16 autocast (the trainer's bf16 path) the terms agree with fp32 to a few bf16 ulps
    (2^-8 relative each; a 16-layer network compounds to a few percent) and the weight is finite."""
    terms = {}
    for bf16 in (False, True):
        model = _model(disc_start=0)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model.train_step(_batch(), 0, RecordingOpt(model))
        terms[bf16] = out
    assert torch.isfinite(terms[True]["gan_weight"])
    for key in ("l1", "perceptual", "loss_d"):
        assert terms[True][key].item() == pytest.approx(terms[False][key].item(), rel=0.05)


class LossRecordingOpt(RecordingOpt):
    """Also records each update's loss value."""

    def update(self, names, loss):
        self.losses = getattr(self, "losses", []) + [loss.detach()]
        return super().update(names, loss)


def test_the_updates_minimize_the_weighted_autoencoder_loss_and_the_hinge_loss():
    """After disc_start: the autoencoder's update minimizes |x - x_hat|_1 + w_p d_perc + L_vq
    + w_d lambda (-mean D(x_hat)), and the discriminator's mean relu(1 - D(x)) + mean relu(1 +
    D(x_hat)), with x in [-1, 1] (w_p = 0.5, w_d = 0.3: neither the default 1)."""
    model = _model(perceptual_weight=0.5, disc_weight=0.3).eval()  # eval: the EMA codebook stays put
    batch = _batch()
    opt = LossRecordingOpt(model)
    model.train_step(batch, 5, opt)
    x = batch["x"] * 2 - 1
    q = model.quantizer(model.encoder(x))
    x_hat = model.decoder(q.z_q)
    rec = (x_hat - x).abs().mean() + 0.5 * model.perceptual((x_hat + 1) / 2, (x + 1) / 2).mean()
    g = -model.discriminator(x_hat).mean()
    lam = adaptive_weight(rec, g, model.decoder.last.weight)
    ae_loss, d_loss = opt.losses
    torch.testing.assert_close(ae_loss, (rec + q.loss + 0.3 * lam * g).detach())
    hinge = torch.relu(1 - model.discriminator(x)).mean() + torch.relu(1 + model.discriminator(x_hat)).mean()
    torch.testing.assert_close(d_loss, hinge.detach())


def test_reconstruct_is_the_training_paths_reconstruction_back_in_image_scale():
    """encode scales [0, 1] to [-1, 1] and decode back: reconstruct(x) = clamp((x_hat + 1) / 2)
    with x_hat the training path's decoding of 2 x - 1."""
    model = _model().eval()
    x = _batch()["x"]
    _, x_hat, _ = model._autoencode(x * 2 - 1)
    torch.testing.assert_close(model.reconstruct(x), ((x_hat + 1) / 2).clamp(0, 1))


def test_the_networks_have_the_papers_layout():
    """Encoder: per level `blocks` residual blocks and a stride-2 conv between levels; decoder:
    blocks + 1 per level and an upsampling between; both with ResBlock, attention, ResBlock at the
    code grid. A residual block whose body is zero is its skip: x itself, or a 1x1 conv."""
    from deepzoo.models.vqgan import AttentionBlock, ResBlock

    config = replace(TINY, channels=(4, 8, 8), blocks=2)
    model = VQGAN(config, perceptual=None)

    def count(net, kind):
        return sum(isinstance(m, kind) for m in net.modules())

    strided = [m for m in model.encoder.modules() if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
    assert len(strided) == 2 and count(model.decoder, nn.Upsample) == 2
    assert count(model.encoder, ResBlock) == 3 * 2 + 2 and count(model.decoder, ResBlock) == 3 * 3 + 2
    assert count(model.encoder, AttentionBlock) == count(model.decoder, AttentionBlock) == 1
    assert count(VQGAN(replace(config, attention=False), perceptual=None).encoder, AttentionBlock) == 0
    norms = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and all(m.num_groups == min(8, m.num_channels) for m in norms)
    assert {m.num_groups for m in norms} == {4, 8}  # 4-channel layers have 4 groups, the others 8
    x = torch.randn(2, 4, 6, 6)
    for c_out in (4, 8):
        block = ResBlock(4, c_out)
        nn.init.zeros_(block.body[-1].weight)
        nn.init.zeros_(block.body[-1].bias)
        torch.testing.assert_close(block(x), x if c_out == 4 else block.skip(x))


@pytest.mark.parametrize("layers, field", [(1, 16), (2, 34), (3, 70)])
def test_the_patch_discriminator_scores_patches_of_pix2pixs_receptive_field(layers, field):
    """`layers` stride-2 4x4 convs, then two stride-1 ones: each logit sees a field x field patch
    (pix2pix: 70 x 70 at 3 layers); weights start N(0, 0.02), BatchNorm scales N(1, 0.02)."""
    from deepzoo.models.vqgan import PatchDiscriminator

    torch.manual_seed(0)
    d = PatchDiscriminator(channels=8, layers=layers).eval()
    x = torch.randn(1, 1, 96, 96, requires_grad=True)
    logits = d(x)
    P = logits.shape[-1]
    assert P == 96 // 2**layers - 2  # each stride-1 4x4 conv (padding 1) takes one off the side
    logits[0, P // 2, P // 2].backward()
    rows, cols = torch.nonzero(x.grad[0, 0].abs() > 0, as_tuple=True)
    assert rows.max() - rows.min() + 1 == field and cols.max() - cols.min() + 1 == field
    convs = torch.cat([m.weight.flatten() for m in d.modules() if isinstance(m, nn.Conv2d)])
    scales = torch.cat([m.weight for m in d.modules() if isinstance(m, nn.BatchNorm2d)])
    # mean and deviation within 5 standard errors of the draws
    n = len(convs)
    assert abs(convs.mean()) < 5 * 0.02 / n**0.5 and abs(convs.std() - 0.02) < 5 * 0.02 / (2 * n) ** 0.5
    assert abs(scales.mean() - 1) < 5 * 0.02 / len(scales) ** 0.5


def test_the_patch_discriminator_doubles_its_width_per_layer_up_to_eight_times():
    """pix2pix's NLayerDiscriminator: min(2^n, 8) times the first width, then one logit."""
    from deepzoo.models.vqgan import PatchDiscriminator

    d = PatchDiscriminator(channels=4, layers=5)
    widths = [m.out_channels for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert widths == [4, 8, 16, 32, 32, 32, 1]


def test_the_papers_settings_are_the_defaults():
    """Esser et al. (2021) keep VQ-VAE's beta = 0.25 (EMA decay 0.99 here, as the VQ-VAE's); their
    released configs weigh the perceptual loss 1 and the adaptive adversarial term 0.8."""
    config = VQGANConfig()
    assert (config.beta, config.decay, config.perceptual_weight, config.disc_weight) == (0.25, 0.99, 1.0, 0.8)
    assert config.adaptive_weight
