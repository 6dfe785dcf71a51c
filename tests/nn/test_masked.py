"""Masked convolutions see only earlier pixels (type A) or earlier pixels and the current one
(type B); the Row LSTM is an LSTM down each column when its kernels are cut to the centre."""

import pytest
import torch
from torch import nn

from deepzoo.nn.masked import GatedLayer, MaskedConv2d, RowLSTM, gate, raster_mask, shift_down


def test_raster_masks_by_hand():
    assert raster_mask(3, 3, "A").tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    assert raster_mask(3, 3, "B").tolist() == [[1, 1, 1], [1, 1, 0], [0, 0, 0]]
    assert raster_mask(1, 3, "B").tolist() == [[1, 1, 0]]
    with pytest.raises(ValueError, match="mask type"):
        raster_mask(3, 3, "C")
    with pytest.raises(ValueError, match="odd"):
        MaskedConv2d(1, 1, 4, "A")


def _dependencies(f, shape):
    """(H*W, H*W) boolean: output pixel p depends on input pixel q (summed over channels)."""
    x = torch.randn(1, *shape, dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(lambda a: f(a).sum(1), x)  # (1, H, W, 1, C, H, W)
    h, w = shape[1:]
    return jacobian.abs().sum(dim=(0, 3, 4)).reshape(h * w, h * w) > 0


@pytest.mark.parametrize("mask_type", ["A", "B"])
@pytest.mark.parametrize("kernel", [3, 5])
def test_a_masked_convolution_sees_exactly_the_earlier_pixels_in_its_window(mask_type, kernel):
    torch.manual_seed(0)
    conv = MaskedConv2d(2, 3, kernel, mask_type).double()
    depends = _dependencies(conv, (2, 6, 6))
    r = kernel // 2
    for p in range(36):
        for q in range(36):
            (i, j), (k, m) = divmod(p, 6), divmod(q, 6)
            earlier = q < p or (mask_type == "B" and q == p)
            in_window = abs(k - i) <= r and abs(m - j) <= r
            assert depends[p, q] == (earlier and in_window), (p, q)


@pytest.mark.parametrize("mask_type", ["A", "B"])
@pytest.mark.parametrize("kernel", [3, 7])
def test_a_masked_convolution_equals_the_full_convolution_with_the_masked_kernel(mask_type, kernel):
    """It skips the kernel's all-zero rows below the centre: the values must not change."""
    torch.manual_seed(0)
    conv = MaskedConv2d(3, 5, kernel, mask_type).double()
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64)
    full = nn.functional.conv2d(x, conv.weight * conv.mask, conv.bias, padding=kernel // 2)
    torch.testing.assert_close(conv(x), full, rtol=1e-12, atol=1e-12)
    nhwc = conv.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(nhwc, full, rtol=1e-12, atol=1e-12)


def test_gate_and_shift_down():
    x = torch.randn(2, 4, 3, 3)
    assert torch.equal(gate(x), torch.tanh(x[:, :2]) * torch.sigmoid(x[:, 2:]))
    shifted = shift_down(x)
    assert torch.equal(shifted[:, :, 1:], x[:, :, :-1]) and shifted[:, :, 0].eq(0).all()


@pytest.mark.parametrize("in_channels", [1, 4])
def test_gated_layers_see_only_earlier_pixels_even_when_the_first_keeps_the_width(in_channels):
    """Two gated layers on a 4-channel-wide stack: h_out at (i, j) has no gradient from the input
    at (i, j) or after it in raster order, and some from its left (or upper) neighbour. With as many input
    channels as the layer's (4), a residual in the first layer would pass pixel (i, j) through."""
    torch.manual_seed(0)
    layers = [GatedLayer(in_channels, 4, 3, first=True), GatedLayer(4, 4, 3, first=False)]
    x = torch.randn(1, in_channels, 5, 5, requires_grad=True)
    v, h = x, x
    for layer in layers:
        v, h = layer(v, h)
    for i, j in [(2, 2), (3, 0), (0, 3)]:
        (grad,) = torch.autograd.grad(h[0, :, i, j].sum(), x, retain_graph=True)
        seen = grad.abs().sum(dim=(0, 1)).flatten() > 0  # (25,) over raster positions
        assert not seen[i * 5 + j :].any()
        assert seen[i * 5 + j - 1] if j else seen[(i - 1) * 5 + j]  # the pixel to the left, or above


def test_row_lstm_cut_to_the_centre_is_torch_lstm_down_each_column():
    """With only the centre taps of K_is and K_ss, every column is an independent LSTM over the
    rows: compare with torch.nn.LSTM (its gate order is i, f, g, o; ours o, f, i, g)."""
    torch.manual_seed(0)
    c_in, c = 3, 4
    row = RowLSTM(c_in, c, kernel_size=3).double()
    lstm = nn.LSTM(c_in, c).double()
    order = [3, 1, 0, 2]  # ours (o, f, i, g) from torch's (i, f, g, o) blocks
    w_ih = torch.cat([lstm.weight_ih_l0.chunk(4)[k] for k in order])
    w_hh = torch.cat([lstm.weight_hh_l0.chunk(4)[k] for k in order])
    bias = torch.cat([(lstm.bias_ih_l0 + lstm.bias_hh_l0).chunk(4)[k] for k in order])
    with torch.no_grad():
        row.input_to_state.weight.zero_()
        row.input_to_state.weight[:, :, 0, 1] = w_ih  # the centre tap
        row.input_to_state.bias.copy_(bias)
        row.state_to_state.weight.zero_()
        row.state_to_state.weight[:, :, 1] = w_hh
        row.state_to_state.bias.zero_()
    x = torch.randn(2, c_in, 5, 6, dtype=torch.float64)  # (B, C, H, W)
    ours = row(x)  # (B, C, H, W)
    sequences = x.permute(2, 0, 3, 1).reshape(5, 2 * 6, c_in)  # rows as time, (batch, column) as batch
    theirs = lstm(sequences)[0].reshape(5, 2, 6, c).permute(1, 3, 0, 2)
    assert torch.allclose(ours, theirs, atol=1e-12)


def test_row_lstm_row_h_depends_on_earlier_rows_and_the_row_up_to_its_column():
    torch.manual_seed(0)
    row = RowLSTM(1, 3).double()
    depends = _dependencies(row, (1, 5, 5))
    for p in range(25):
        (i, j) = divmod(p, 5)
        for q in range(25):
            (k, m) = divmod(q, 5)
            if k > i or (k == i and m > j):
                assert not depends[p, q]
    assert depends[2 * 5 + 2, 1 * 5 + 3]  # the row above, one column to the right: seen


@pytest.mark.parametrize("first", [True, False])
def test_a_gated_layer_is_its_equations_with_the_label_in_both_stacks(first):
    """v_out = gate(v' + V y); h_out = [h +] conv_1x1(gate(h' + V y)), h' the row convolution of h
    plus the link from shift_down(v'); the residual h + only after the first layer."""
    torch.manual_seed(0)
    layer = GatedLayer(4, 4, 3, first=first, num_classes=5)
    v, h, y = torch.randn(2, 4, 6, 6), torch.randn(2, 4, 6, 6), torch.tensor([1, 3])
    label = layer.label(y)[:, :, None, None]
    v_pre = layer.vertical(v)
    row = layer.horizontal_conv.weight * (layer.horizontal_mask if first else 1)
    h_pre = nn.functional.conv2d(nn.functional.pad(h, (1, 0, 0, 0)), row, layer.horizontal_conv.bias)
    h_pre = h_pre + layer.link(shift_down(v_pre))
    v_out, h_out = layer(v, h, y)
    torch.testing.assert_close(v_out, gate(v_pre + label))
    out = layer.horizontal_out(gate(h_pre + label))
    torch.testing.assert_close(h_out, out if first else h + out)
