import pytest
import torch
import torch.nn.functional as F

from deepzoo.nn import BasicBlock


@pytest.mark.parametrize(
    "c_in,c_out,stride,h,expected",
    [(8, 8, 1, 14, (2, 8, 14, 14)), (8, 16, 2, 14, (2, 16, 7, 7)), (8, 16, 2, 7, (2, 16, 4, 4))],
)
def test_basic_block_shapes(c_in, c_out, stride, h, expected):
    assert BasicBlock(c_in, c_out, stride)(torch.randn(2, c_in, h, h)).shape == expected


def test_same_shape_uses_the_identity_skip_and_changed_shape_a_projection():
    assert isinstance(BasicBlock(8, 8).skip, torch.nn.Identity)
    projection = BasicBlock(8, 16, stride=2).skip
    assert isinstance(projection[0], torch.nn.Conv2d) and projection[0].kernel_size == (1, 1)
    assert projection[0].stride == (2, 2)


@pytest.mark.parametrize("c_in, c_out, stride", [(4, 4, 1), (4, 8, 2), (4, 4, 2), (4, 8, 1)])
def test_a_basic_block_is_he_et_als_equation_with_the_option_b_shortcut(c_in, c_out, stride):
    """y = relu(BN(conv3x3(relu(BN(conv3x3_s(x))))) + S(x)), S = identity when the shape is kept,
    else BN(conv1x1_s(x)); no convolution has a bias (a BatchNorm follows each)."""
    torch.manual_seed(0)
    block = BasicBlock(c_in, c_out, stride)
    with torch.no_grad():  # off the defaults (unit BN, zero running means), as after training
        for p in list(block.parameters()) + [b for n, b in block.named_buffers() if "running" in n]:
            p.copy_(torch.rand_like(p) + 0.5 if p.ndim == 1 else torch.randn_like(p))
    block.eval()

    def bn(x, norm):
        return F.batch_norm(
            x, norm.running_mean, norm.running_var, norm.weight, norm.bias, False, 0.0, norm.eps
        )

    x = torch.randn(2, c_in, 7, 7)
    h = torch.relu(bn(F.conv2d(x, block.conv1.weight, stride=stride, padding=1), block.bn1))
    h = bn(F.conv2d(h, block.conv2.weight, padding=1), block.bn2)
    kept = c_in == c_out and stride == 1
    skip = x if kept else bn(F.conv2d(x, block.skip[0].weight, stride=stride), block.skip[1])
    torch.testing.assert_close(block(x), torch.relu(h + skip))
    assert isinstance(block.skip, torch.nn.Identity) == kept
    assert all(m.bias is None for m in block.modules() if isinstance(m, torch.nn.Conv2d))


def test_zeroed_residual_branch_passes_the_input_through():
    block = BasicBlock(5, 5).eval()
    torch.nn.init.zeros_(block.bn2.weight)
    torch.nn.init.zeros_(block.bn2.bias)
    x = torch.randn(2, 5, 6, 6)
    torch.testing.assert_close(block(x), torch.relu(x))


def test_gradient_reaches_the_input_through_the_skip_even_when_the_branch_is_dead():
    block = BasicBlock(3, 3).eval()
    torch.nn.init.zeros_(block.bn2.weight)
    torch.nn.init.zeros_(block.bn2.bias)
    x = (torch.rand(1, 3, 4, 4) + 0.1).requires_grad_()  # positive: relu passes everything
    block(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x))


def test_the_vq_vae_residual_stack_is_its_equation():
    """x <- x + conv1x1(relu(conv3x3(relu(x)))) for each layer, then relu (van den Oord et al.)."""
    from deepzoo.nn.residual import ResidualStack

    torch.manual_seed(0)
    stack = ResidualStack(6, hidden=3, layers=2)
    x = torch.randn(2, 6, 5, 5)
    expected = x
    for block in stack.blocks:
        narrow, wide = block[1], block[3]
        assert narrow.kernel_size == (3, 3) and narrow.out_channels == 3 and wide.kernel_size == (1, 1)
        h = F.conv2d(torch.relu(expected), narrow.weight, narrow.bias, padding=1)
        expected = expected + F.conv2d(torch.relu(h), wide.weight, wide.bias)
    torch.testing.assert_close(stack(x), torch.relu(expected))
