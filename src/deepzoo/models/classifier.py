"""Image classifiers for MNIST: a plain CNN and a ResNet of basic residual blocks.

Both take x: (B, 1, 28, 28) in [0, 1], standardize it with the MNIST train statistics, and return
logits (B, K). `features(x)` is the penultimate representation (B, D) that the FID metric uses.
Loss: L = -1/B sum_i log softmax(f(x_i))[y_i], on a batch that `Regularization` may first
rotate and zoom, translate, cut out and mix (training only; nn/augment.py), against labels it may smooth.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from deepzoo.config import Count, Index, NonNegative, Positive, Range, Rate, Sizes, ranged
from deepzoo.nn.augment import cutout, mixed_cross_entropy, mixup, random_affine, random_translate
from deepzoo.nn.dropout import linear_decay_rule
from deepzoo.nn.precision import upcast
from deepzoo.nn.residual import BasicBlock

Degrees = ranged(float, Range(0, 180))
ShearDegrees = ranged(float, Range(0, 90, high_open=True))


@dataclass(frozen=True)
class Regularization:
    """What training does to each batch before the loss (in this order; evaluation sees none)."""

    rotate: Degrees = 0.0
    """Rotate each image by an angle drawn uniformly within +-this many degrees (0: off)."""
    scale: Rate = 0.0
    """Zoom each image by a factor drawn uniformly in [1 - scale, 1 + scale] (0: off)."""
    shear: ShearDegrees = 0.0
    """Shear each image along x by an angle drawn uniformly within +-this many degrees (0: off)."""
    stretch: Rate = 0.0
    """Stretch each image: zoom x by t and y by 1 / t, t ~ U(1 - stretch, 1 + stretch) (0: off)."""
    translate: Index = 0
    """Shift each image by up to this many pixels in each direction, zero-filled (0: off)."""
    cutout: Index = 0
    """Zero one square of this side per image, centred at a uniform pixel (0: off)."""
    mixup: NonNegative = 0.0
    """Mix the batch with a permutation of itself, lambda ~ Beta(mixup, mixup) (0: off)."""
    label_smoothing: Rate = 0.0
    """Target (1 - eps) onehot + eps / K instead of onehot (an evaluated loss stays the plain NLL)."""


@dataclass(frozen=True)
class CNNConfig:
    """[conv3x3-BN-ReLU] x convs_per_stage + 2x2 max-pool stages, flattened into a ReLU feature
    layer, then a linear classifier."""

    channels: Sizes = (32, 64, 128)
    """Output channels of each stage (each stage halves the resolution)."""
    convs_per_stage: Count = 1
    """3x3 convolutions in each stage."""
    feature_dim: Count = 128
    """Width of the penultimate (feature) layer."""
    num_classes: Count = 10
    """Output classes."""
    batchnorm: bool = True
    """BatchNorm after every convolution."""
    dropout: Rate = 0.0
    """Dropout before the last layer."""
    regularize: Regularization = Regularization()
    """Data augmentation, mixup and label smoothing during training."""
    input_mean: float = 0.1307
    """Pixel mean subtracted from the [0, 1] input (MNIST train's; the recipes pass data.mnist's)."""
    input_std: Positive = 0.3081
    """Pixel standard deviation the input is divided by (MNIST train's)."""


@dataclass(frozen=True)
class ResNetConfig:
    """A conv stem, then stages of basic residual blocks (the first block of a stage strides 2)."""

    widths: Sizes = (32, 64, 128)
    """Channels of each stage."""
    blocks_per_stage: Count = 2
    """Basic blocks in each stage."""
    stochastic_depth: Rate = 0.0
    """Drop probability of the last block's residual branch in training; block l of L drops with
    (l / L) times it (Huang et al.'s linear decay rule; 0: off)."""
    regularize: Regularization = Regularization()
    """Data augmentation, mixup and label smoothing during training."""
    num_classes: Count = 10
    """Output classes."""
    input_mean: float = 0.1307
    """Pixel mean subtracted from the [0, 1] input (MNIST train's; the recipes pass data.mnist's)."""
    input_std: Positive = 0.3081
    """Pixel standard deviation the input is divided by (MNIST train's)."""


class Classifier(nn.Module):
    """Shared head and loss: standardize -> body -> features head -> features -> logits.

    Activations and kernels are kept channels-last (NHWC): about 1.5x faster convolutions on
    CPU (oneDNN) and GPU (tensor cores) than NCHW, measured in benchmarks/.
    """

    body: nn.Module
    features_head: nn.Module
    head: nn.Module
    frozen_features: bool = False

    def freeze_features(self) -> Classifier:
        """Use the network up to its features as a fixed feature extractor (transfer learning):
        no gradients into body and features_head, which also stay in eval mode while the head
        trains (BatchNorm keeps its running statistics, dropout is off), so the features are
        exactly the pretrained network's."""
        self.frozen_features = True
        for part in (self.body, self.features_head):
            part.requires_grad_(False)
        return self.train(self.training)

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        if self.frozen_features:
            self.body.eval()
            self.features_head.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 1, 28, 28) in [0, 1] -> (B, D)."""
        x = (x - self.config.input_mean) / self.config.input_std
        x = x.contiguous(memory_format=torch.channels_last)
        return self.features_head(self.body(x))  # (B, C, h, w) -> (B, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, K)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Cross-entropy of the (in training, regularized) batch; "accuracy" is against batch["y"]
        on the inputs the network saw (rotated, zoomed, translated, cut out, mixed)."""
        x, y, reg = batch["x"], batch["y"], self.config.regularize
        y_mixed, lam, smoothing = y, 1.0, reg.label_smoothing if self.training else 0.0
        if self.training:
            x = random_affine(x, reg.rotate, reg.scale, shear=reg.shear, stretch=reg.stretch)
            x = cutout(random_translate(x, reg.translate), reg.cutout)
            if reg.mixup > 0:
                x, y, y_mixed, lam = mixup(x, y, reg.mixup)
        logits = self(x)
        loss = mixed_cross_entropy(upcast(logits), y, y_mixed, lam, smoothing)
        accuracy = (logits.argmax(dim=1) == y).float().mean()
        return {"loss": loss, "accuracy": accuracy}


class CNN(Classifier):
    def __init__(self, config: CNNConfig = CNNConfig()) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        in_channels = 1
        for out_channels in config.channels:
            for _ in range(config.convs_per_stage):
                layers += [
                    nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=not config.batchnorm),
                    nn.BatchNorm2d(out_channels) if config.batchnorm else nn.Identity(),
                    nn.ReLU(inplace=True),
                ]
                in_channels = out_channels
            layers.append(nn.MaxPool2d(2))
        self.body = nn.Sequential(*layers)
        side = 28 // 2 ** len(config.channels)
        self.features_head = nn.Sequential(  # flattening keeps where strokes are, unlike pooling
            nn.Flatten(), nn.Linear(in_channels * side**2, config.feature_dim), nn.ReLU(inplace=True)
        )
        self.head = nn.Sequential(
            nn.Dropout(config.dropout), nn.Linear(config.feature_dim, config.num_classes)
        )
        self.to(memory_format=torch.channels_last)


class ResNet(Classifier):
    def __init__(self, config: ResNetConfig = ResNetConfig()) -> None:
        super().__init__()
        self.config = config
        width = config.widths[0]
        layers: list[nn.Module] = [
            nn.Conv2d(1, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        ]
        drops = iter(linear_decay_rule(len(config.widths) * config.blocks_per_stage, config.stochastic_depth))
        for stage, out_channels in enumerate(config.widths):
            for block in range(config.blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(BasicBlock(width, out_channels, stride, next(drops)))
                width = out_channels
        self.body = nn.Sequential(*layers)
        self.features_head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(width, config.num_classes)
        self.init_weights()
        self.to(memory_format=torch.channels_last)

    def init_weights(self) -> None:
        """Kaiming-normal convolutions; the last BN of each block starts at zero so every
        block begins as its skip path (Goyal et al., 2017)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if isinstance(module, BasicBlock):
                nn.init.zeros_(module.bn2.weight)
