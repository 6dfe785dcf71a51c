import pytest
import torch

from deepzoo.nn.unet import GroupNorm, UNet, UNetConfig

SMALL = UNetConfig(channels=(8, 16, 16), num_classes=10, heads=2)


def _perturbed(config=SMALL) -> UNet:
    torch.manual_seed(0)
    net = UNet(config)
    with torch.no_grad():  # leave the zero-initialized identity start so outputs depend on inputs
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


def test_starts_at_zero_output_and_keeps_the_shape():
    torch.manual_seed(0)
    net = UNet(SMALL)
    x = torch.randn(3, 1, 28, 28)
    out = net(x, torch.rand(3), torch.tensor([1, 2, 3]))
    assert out.shape == x.shape and out.abs().max() == 0


def test_output_depends_on_time_and_label_and_none_means_the_null_label():
    net = _perturbed()
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([1.0, 1.0])
    a = net(x, t, torch.tensor([1, 1]))
    assert not torch.allclose(a, net(x, t * 500, torch.tensor([1, 1])))
    assert not torch.allclose(a, net(x, t, torch.tensor([2, 2])))
    torch.testing.assert_close(net(x, t, None), net(x, t, torch.tensor([10, 10])))
    torch.testing.assert_close(net(x, torch.tensor(1.0), None), net(x, t, None))  # a scalar time broadcasts


def test_images_are_independent_within_a_batch():
    net = _perturbed().eval()
    x, t, y = torch.randn(4, 1, 28, 28), torch.rand(4), torch.tensor([0, 1, 2, 3])
    torch.testing.assert_close(net(x, t, y)[:2], net(x[:2], t[:2], y[:2]), atol=1e-5, rtol=1e-5)


def test_bad_image_size_is_a_clear_error():
    with pytest.raises(ValueError, match="divisible by 4"):
        UNet(SMALL)(torch.randn(1, 1, 30, 30), torch.rand(1))


def test_group_norm_equals_torch_and_keeps_bf16():
    torch.manual_seed(0)
    ours, reference = GroupNorm(4, 16), torch.nn.GroupNorm(4, 16)
    x = torch.randn(2, 16, 5, 5)
    torch.testing.assert_close(ours(x), reference(x))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert ours(x.bfloat16()).dtype == torch.bfloat16


@pytest.mark.parametrize("levels", [(3,), (-1,), (0, 5)])
def test_attention_levels_it_does_not_have_are_refused(levels):
    """Levels are 0 .. len(channels) - 1; any other (a negative one too) would match no level and
    train without attention."""
    with pytest.raises(ValueError, match="attention_levels"):
        UNetConfig(channels=(8, 16, 16), attention_levels=levels)
    with pytest.raises(ValueError, match="heads must be a divisor of channels"):
        UNetConfig(channels=(8, 16, 12), attention_levels=(2,), heads=8)


def _perturb(module: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():  # off the zero-initialized identity start
        for p in module.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return module


def test_a_residual_block_is_its_equation():
    """h = conv3(silu(GN(x))); h = GN(h)(1 + scale) + shift with (scale, shift) = Linear(silu(e));
    out = conv1x1(x) + conv3(dropout(silu(h))), GN of min(8, C) groups; the dropout mask is
    replayed from the same seed."""
    import torch.nn.functional as F

    from deepzoo.nn.unet import ResBlock

    torch.manual_seed(0)
    block = _perturb(ResBlock(16, 24, emb_dim=12, dropout=0.5))
    assert block.conv1.weight.shape == (24, 16, 3, 3) and block.conv2.weight.shape == (24, 24, 3, 3)
    x, e = torch.randn(2, 16, 6, 5), torch.randn(2, 12)
    h = F.conv2d(
        F.silu(F.group_norm(x, 8, block.norm1.weight, block.norm1.bias)), *block.conv1.parameters(), padding=1
    )
    scale, shift = F.linear(F.silu(e), *block.emb.parameters())[:, :, None, None].chunk(2, dim=1)
    h = F.group_norm(h, 8, block.norm2.weight, block.norm2.bias) * (1 + scale) + shift
    skip = F.conv2d(x, *block.skip.parameters())
    for training in (False, True):
        block.train(training)
        torch.manual_seed(1)
        out = block(x, e)
        torch.manual_seed(1)
        expected = skip + F.conv2d(F.dropout(F.silu(h), 0.5, training), *block.conv2.parameters(), padding=1)
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    fresh = ResBlock(16, 16, emb_dim=12, dropout=0.0)
    torch.testing.assert_close(fresh(x, e), x)  # a new block is the identity


def test_an_attention_block_is_x_plus_torch_attention_over_the_normalized_pixels():
    from deepzoo.nn.unet import AttentionBlock

    torch.manual_seed(0)
    block = _perturb(AttentionBlock(16, 4))
    reference = torch.nn.MultiheadAttention(16, 4, batch_first=True)
    ours = block.attention
    with torch.no_grad():
        reference.in_proj_weight.copy_(
            torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight])
        )
        reference.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        reference.out_proj.weight.copy_(ours.out_proj.weight)
        reference.out_proj.bias.copy_(ours.out_proj.bias)
    x = torch.randn(2, 16, 3, 5)
    tokens = (
        torch.nn.functional.group_norm(x, 8, block.norm.weight, block.norm.bias).flatten(2).transpose(1, 2)
    )
    attended = reference(tokens, tokens, tokens, need_weights=False)[0]  # (B, HW, C)
    expected = x + attended.transpose(1, 2).reshape(x.shape)
    torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=1e-5)


def test_the_levels_hold_the_blocks_and_attention_the_config_asks_for():
    """Down: `blocks` residual blocks per level, up: blocks + 1, middle: two, each with attention
    at the attention levels (always in the middle); nearest-neighbour upsampling; the time
    embedding is 4 C_0 wide; the output is conv3x3(silu(GN(h)))."""
    from deepzoo.nn.unet import AttentionBlock, ResBlock

    config = UNetConfig(channels=(8, 16, 16), blocks=2, attention_levels=(1,), heads=2)
    net = UNet(config)
    counts = lambda level, kind: sum(isinstance(m, kind) for m in level.modules())  # noqa: E731
    assert [counts(level, ResBlock) for level in net.down] == [2, 2, 2]
    assert [counts(level, ResBlock) for level in net.up] == [3, 3, 3]
    assert [counts(level, AttentionBlock) for level in net.down] == [0, 2, 0]
    assert [counts(level, AttentionBlock) for level in net.up] == [0, 3, 0]  # levels 2, 1, 0
    assert counts(net.middle, ResBlock) == counts(net.middle, AttentionBlock) == 2
    assert all(up[0].mode == "nearest" and up[0].scale_factor == 2.0 for up in net.upsample)
    assert net.time_mlp[-1].out_features == 32 and net.down[0].blocks[0].emb.in_features == 32
    assert [type(m) for m in net.out] == [GroupNorm, torch.nn.SiLU, torch.nn.Conv2d]  # GN, silu, conv3x3
    assert net.out[-1].kernel_size == net.stem.kernel_size == (3, 3)
    groups = {m.num_groups for m in net.modules() if isinstance(m, torch.nn.GroupNorm)}
    assert groups == {8}  # min(8, C) for every width here


def test_every_parameter_shapes_the_output():
    """A part left out of the forward pass (a norm, an attention, the label embedding) would get
    no gradient."""
    net = _perturbed()
    x, t, y = torch.randn(2, 1, 28, 28), torch.rand(2), torch.tensor([3, 4])
    net(x, t, y).square().sum().backward()
    starved = [name for name, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert starved == [] and net.label_emb.weight.grad[[3, 4]].abs().sum(1).gt(0).all()


def test_each_up_level_concatenates_the_skip_of_its_down_level():
    net = _perturbed()
    skips, inputs = [], []
    for level in net.down:
        level.register_forward_hook(lambda module, args, out: skips.append(out))
    for level in net.up:
        level.register_forward_pre_hook(lambda module, args: inputs.append(args[0]))
    net(torch.randn(2, 1, 28, 28), torch.rand(2))
    assert len(inputs) == len(skips) == 3
    for given, skip in zip(inputs, reversed(skips)):
        torch.testing.assert_close(given[:, given.shape[1] // 2 :], skip)


def test_each_image_gets_its_own_time_and_nearby_times_differ():
    net = _perturbed().eval()
    x, t, y = torch.randn(3, 1, 28, 28), torch.tensor([0.1, 0.4, 0.7]), torch.tensor([0, 1, 2])
    out = net(x, t, y)
    for i in range(3):
        torch.testing.assert_close(
            out[i : i + 1], net(x[i : i + 1], t[i : i + 1], y[i : i + 1]), atol=1e-5, rtol=1e-5
        )
    assert not torch.allclose(out[:1], net(x[:1], t[1:2], y[:1]), atol=1e-4)
