import pytest
import torch

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


def test_block_output_is_relu_of_residual_plus_skip():
    torch.manual_seed(0)
    block = BasicBlock(4, 6, stride=2).eval()
    x = torch.randn(3, 4, 9, 9)
    skip = block.skip[1](torch.nn.functional.conv2d(x, block.skip[0].weight, stride=2))
    residual = block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x)))))
    torch.testing.assert_close(block(x), torch.relu(residual + skip))


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
