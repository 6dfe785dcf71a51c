"""Causal layers of autoregressive image models: the masked convolution of PixelCNN and the Row
LSTM of PixelRNN (van den Oord et al., 2016a), and the gated layer of Gated PixelCNN with its
vertical and horizontal stacks (van den Oord et al., 2016b).

Pixels are ordered in raster order, (i, j) before (i', j') iff i < i' or (i == i' and j < j').
A layer is causal when its output at (i, j) depends on its input only at positions allowed by
its mask: strictly before (i, j) (type A, the first layer, which sees the image) or at or before
(i, j) (type B, the later layers, whose input at (i, j) already excludes pixel (i, j)). Images here
have one channel, so the masks do not split colour channels (PixelCNN's R, G, B sub-masks).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

MaskType = Literal["A", "B"]


def raster_mask(height: int, width: int, mask_type: MaskType) -> torch.Tensor:
    """(height, width) kernel mask: 1 on the rows above the centre, and on the centre row left of
    the centre (A) or left of and at the centre (B)."""
    if mask_type not in ("A", "B"):
        raise ValueError(f"mask type must be 'A' or 'B', got {mask_type!r}")
    mask = torch.ones(height, width)
    ci, cj = height // 2, width // 2
    mask[ci, cj + (mask_type == "B") :] = 0
    mask[ci + 1 :] = 0
    return mask


class MaskedConv2d(nn.Conv2d):
    """A k x k convolution with 'same' padding whose weights are multiplied by `raster_mask`:
    out(i, j) sees in(i', j') only for (i', j') before (A) or at-or-before (B) (i, j) in raster
    order, within the kernel. x: (B, C_in, H, W) -> (B, C_out, H, W).

    The mask's rows below the centre are all zero, so the convolution runs with the kernel's top
    k//2 + 1 rows over the input padded above only: the same output without the zero taps (a 7x7
    type A kernel computes 28 of its 49)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, mask_type: MaskType) -> None:
        if kernel_size % 2 == 0:
            raise ValueError(f"a masked convolution needs an odd kernel, got {kernel_size}")
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.register_buffer("mask", raster_mask(kernel_size, kernel_size, mask_type))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.kernel_size[0] // 2
        weight = (self.weight * self.mask)[:, :, : half + 1]
        return F.conv2d(F.pad(x, (half, half, half, 0)), weight, self.bias)


def gate(x: torch.Tensor) -> torch.Tensor:
    """tanh(a) * sigmoid(b) with (a, b) the two halves of the channels: (B, 2C, ...) -> (B, C, ...)."""
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


def shift_down(x: torch.Tensor) -> torch.Tensor:
    """Row i of the output is row i - 1 of x (row 0 is zero): (B, C, H, W) -> (B, C, H, W)."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1]


class GatedLayer(nn.Module):
    """One layer of Gated PixelCNN; removes PixelCNN's blind spot with two stacks.

    vertical:   v' = conv_{(k//2+1) x k}(v), padded so that row i sees rows i - k//2 .. i of v, all
                k columns: v' at row i depends on the image's rows <= i only.
    horizontal: h' = conv_{1 x (k//2+1)}(h) + conv_1x1(shift_down(v')): row i of h sees its own
                row up to the current column (up to the column before it in the first layer, type A)
                and v' from row i - 1, so the image's rows < i: every earlier pixel within reach.
    outputs:    v_out = gate(v' + V y),  h_out = h + conv_1x1(gate(h' + V y))  (no residual in the
                first layer, whose h is the image itself), y a class embedding (optional).
    """

    def __init__(
        self, in_channels: int, channels: int, kernel_size: int, first: bool, num_classes: int = 0
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"a gated layer needs an odd kernel, got {kernel_size}")
        self.first, self.half = first, kernel_size // 2
        self.vertical_conv = nn.Conv2d(in_channels, 2 * channels, (self.half + 1, kernel_size))
        self.horizontal_conv = nn.Conv2d(in_channels, 2 * channels, (1, self.half + 1))
        if first:  # type A: drop the kernel's last column, the current pixel
            self.register_buffer(
                "horizontal_mask", torch.ones(1, self.half + 1).index_fill_(1, torch.tensor(self.half), 0)
            )
        self.link = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.horizontal_out = nn.Conv2d(channels, channels, 1)
        self.label = nn.Embedding(num_classes, 2 * channels) if num_classes else None

    def vertical(self, v: torch.Tensor) -> torch.Tensor:
        """v' (B, 2C, H, W); row i from rows <= i of v."""
        return self.vertical_conv(F.pad(v, (self.half, self.half, self.half, 0)))

    def condition(self, y: torch.Tensor | None) -> torch.Tensor | float:
        return 0.0 if self.label is None or y is None else self.label(y)[:, :, None, None]

    def vertical_out(self, v_pre: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return gate(v_pre + self.condition(y))

    def horizontal(self, h: torch.Tensor, link: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """h_out from h (B, C_in, H, W) and link = conv_1x1(shift_down(v')) cut to h's rows and columns."""
        weight = self.horizontal_conv.weight
        if self.first:
            weight = weight * self.horizontal_mask
        h_pre = F.conv2d(F.pad(h, (self.half, 0, 0, 0)), weight, self.horizontal_conv.bias) + link
        out = self.horizontal_out(gate(h_pre + self.condition(y)))
        return out if self.first else h + out

    def forward(
        self, v: torch.Tensor, h: torch.Tensor, y: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        v_pre = self.vertical(v)
        return self.vertical_out(v_pre, y), self.horizontal(h, self.link(shift_down(v_pre)), y)


class RowLSTM(nn.Module):
    """PixelRNN's Row LSTM: the image is processed one row at a time, every pixel of a row at once.

        [o, f, i, g]_i = K_is (*) x_i + K_ss (*) h_{i-1}
        c_i = sigmoid(f) c_{i-1} + sigmoid(i) tanh(g),    h_i = sigmoid(o) tanh(c_i)

    K_is is a 1 x k convolution along the row masked to columns <= j (type B: x at (i, j) already
    excludes pixel (i, j)); K_ss a 1 x 3 convolution of the previous row's state. h_i at column j
    sees a triangle of earlier rows and the current row up to j.
    x: (B, C_in, H, W) -> h: (B, C, H, W).
    """

    def __init__(self, in_channels: int, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.channels = channels
        self.input_to_state = MaskedRowConv(in_channels, 4 * channels, kernel_size)
        self.state_to_state = nn.Conv1d(channels, 4 * channels, 3, padding=1)

    def initial_state(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        zeros = x.new_zeros(len(x), self.channels, x.shape[-1])
        return zeros, zeros

    def step(
        self, gates_in: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One row: gates_in (B, 4C, W) = K_is (*) x_i, state (h, c) of row i - 1, each (B, C, W)."""
        h, c = state
        o, f, i, g = (gates_in + self.state_to_state(h)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gates_in = self.input_to_state(x)  # (B, 4C, H, W), every row at once
        state, rows = self.initial_state(x), []
        for i in range(x.shape[2]):
            state = self.step(gates_in[:, :, i], state)
            rows.append(state[0])
        return torch.stack(rows, dim=2)


class MaskedRowConv(nn.Conv2d):
    """A 1 x k convolution along rows masked to columns <= j (type B). (B, C, H, W) -> (B, C', H, W)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__(in_channels, out_channels, (1, kernel_size), padding=(0, kernel_size // 2))
        self.register_buffer("mask", raster_mask(1, kernel_size, "B"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)
