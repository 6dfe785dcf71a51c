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
