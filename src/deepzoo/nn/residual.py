"""Residual blocks: the basic block of He et al. (2016), "Deep Residual Learning for Image
Recognition", and the bottleneck-free stack of the VQ-VAE (van den Oord et al., 2017)."""

from __future__ import annotations

import torch
from torch import nn

from deepzoo.nn.dropout import drop_path


class BasicBlock(nn.Module):
    """y = relu(F(x) + S(x)), F = BN(conv3x3(relu(BN(conv3x3_stride(x))))).

    S is the identity when the shape is kept, else the projection BN(conv1x1_stride(x))
    (the paper's option B). x: (B, C_in, H, W) -> y: (B, C_out, ceil(H / stride), ceil(W / stride)).
    With `drop_prob` p > 0, training drops F for a fraction p of the examples (stochastic depth,
    `drop_path`): y = relu(F(x) m / (1 - p) + S(x)).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.skip = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """F(x), the branch the block learns."""
        return self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(drop_path(self.residual(x), self.drop_prob, self.training) + self.skip(x))


class ResidualStack(nn.Module):
    """The VQ-VAE's stack: x <- x + conv1x1(relu(conv3x3(relu(x)))) `layers` times, then relu.
    x: (B, C, H, W) -> (B, C, H, W); the 3x3 conv narrows to `hidden` channels."""

    def __init__(self, channels: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.ReLU(), nn.Conv2d(channels, hidden, 3, 1, 1), nn.ReLU(), nn.Conv2d(hidden, channels, 1)
            )
            for _ in range(layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = x + block(x)
        return torch.relu(x)
