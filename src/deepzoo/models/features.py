"""The MNIST feature network behind classifier-FID (and usable as a perceptual-loss network by
any model): a fixed CNN whose weights ship in the package.

It is trained by the `mnist-features` recipe (fixed seed 1234) and copied here, so every deepzoo
evaluation measures samples with the same features. Its features are the 128-wide ReLU layer
before the classifier. `perceptual_loss` turns its body into an LPIPS-style distance, and
`window_features` slides its feature layer over images larger than 28x28 (the scenes' FID).
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from deepzoo.models.classifier import CNN, CNNConfig
from deepzoo.nn.losses import PerceptualLoss

FEATURE_CONFIG = CNNConfig(channels=(32, 64, 128), convs_per_stage=2, feature_dim=128)
WEIGHTS = Path(__file__).with_name("weights") / "mnist_features.safetensors"


@lru_cache(maxsize=1)
def _shipped_weights() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not WEIGHTS.exists():
        raise FileNotFoundError(f"the feature classifier's weights are missing: {WEIGHTS}")
    return load_file(WEIGHTS)


def mnist_feature_net() -> CNN:
    """The shipped feature classifier, in eval mode on the CPU, its parameters frozen: a new
    module at each call (the weights are read once), so moving or converting one (`.to(device)`,
    `.double()`, a reward inside a model that is) leaves every other caller's as it was."""
    net = CNN(FEATURE_CONFIG)
    net.load_state_dict(_shipped_weights())
    return net.eval().requires_grad_(False)


def perceptual_loss(net: CNN | None = None) -> PerceptualLoss:
    """The LPIPS-style distance (nn/losses.py) on a CNN classifier's body (default: the shipped
    MNIST feature network): taps at the last ReLU of each stage (3 stages: 32, 64 and 128 channels
    at full, 1/2 and 1/4 resolution), on inputs standardized as the classifier's. Works at any
    image size (the body is convolutional); x, y in [0, 1]."""
    net = mnist_feature_net() if net is None else net
    body = net.body
    taps = [i for i in range(len(body) - 1) if isinstance(body[i + 1], nn.MaxPool2d)]
    return PerceptualLoss(body, taps, net.config.input_mean, net.config.input_std)


@torch.no_grad()
def window_features(net: CNN, x: torch.Tensor) -> torch.Tensor:
    """The classifier's features of every 28x28-sized window of larger images: the flattening
    feature layer ReLU(W vec(B(x)[:, :, i:i+s, j:j+s]) + b), s = 28 / 2^stages (3 for the shipped
    net), slid over the body's map B(x) as a convolution (windows 8 pixels apart). x (B, 1, H, W)
    in [0, 1] -> (B, D, H/8 - s + 1, W/8 - s + 1); on a 28x28 image it is `net.features(x)`."""
    maps = net.body(
        ((x - net.config.input_mean) / net.config.input_std).contiguous(memory_format=torch.channels_last)
    )
    linear = net.features_head[1]
    side = int(math.isqrt(linear.in_features // maps.shape[1]))
    rows, cols = maps.shape[2] - side + 1, maps.shape[3] - side + 1
    windows = F.unfold(maps.float(), side)  # (B, C s s, rows cols), flattened as nn.Flatten does
    features = torch.relu(F.linear(windows.transpose(1, 2), linear.weight.float(), linear.bias.float()))
    return features.transpose(1, 2).reshape(len(x), -1, rows, cols)
