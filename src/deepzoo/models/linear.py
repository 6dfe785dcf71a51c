"""Linear classifiers (multiclass SVM and softmax) and a two-layer network with a hand-written
backward pass, on flattened MNIST.

Scores s = x W^T + b with x: (B, D) the standardized pixels, W: (C, D). Loss:
    L = 1/N sum_i L_i(s_i, y_i) + lambda R(W)
with L_i the SVM hinge or the softmax cross-entropy of `nn/losses.py` and R the L2, L1 or
elastic-net penalty. The two-layer net is s = relu(x W1^T + b1) W2^T + b2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from deepzoo.config import Count, NonNegative, Positive
from deepzoo.nn.init import kaiming_normal_
from deepzoo.nn.losses import multiclass_svm_loss, regularization, softmax_cross_entropy
from deepzoo.nn.precision import upcast


@dataclass(frozen=True)
class LinearConfig:
    loss: Literal["svm", "softmax"] = "softmax"
    """Data loss: multiclass hinge (margin below) or softmax cross-entropy."""
    regularization: Literal["l2", "l1", "elastic", "none"] = "l2"
    """Penalty R(W) on the weights (never the biases)."""
    reg_strength: NonNegative = 1e-4
    """lambda."""
    elastic_beta: NonNegative = 1.0
    """beta in the elastic net R(W) = sum beta W^2 + |W|."""
    margin: NonNegative = 1.0
    """SVM margin."""
    input_dim: Count = 784
    """Pixels per image (flattened)."""
    num_classes: Count = 10
    """Output classes."""
    input_mean: float = 0.1307
    """Pixel mean subtracted from the [0, 1] input (MNIST train's; the recipes pass data.mnist's)."""
    input_std: Positive = 0.3081
    """Pixel standard deviation the input is divided by (MNIST train's)."""


@dataclass(frozen=True)
class TwoLayerConfig:
    hidden: Count = 512
    """Width of the ReLU hidden layer."""
    reg_strength: NonNegative = 1e-5
    """lambda of the L2 penalty on W1 and W2."""
    input_dim: Count = 784
    """Pixels per image (flattened)."""
    num_classes: Count = 10
    """Output classes."""
    input_mean: float = 0.1307
    """Pixel mean subtracted from the [0, 1] input (MNIST train's; the recipes pass data.mnist's)."""
    input_std: Positive = 0.3081
    """Pixel standard deviation the input is divided by (MNIST train's)."""


def _flatten(x: torch.Tensor, config: LinearConfig | TwoLayerConfig) -> torch.Tensor:
    return ((x - config.input_mean) / config.input_std).flatten(1)  # (B, D)


def _accuracy(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (scores.argmax(dim=1) == labels).float().mean()


class LinearClassifier(nn.Module):
    def __init__(self, config: LinearConfig = LinearConfig()) -> None:
        super().__init__()
        self.config = config
        self.weight = nn.Parameter(1e-3 * torch.randn(config.num_classes, config.input_dim))
        self.bias = nn.Parameter(torch.zeros(config.num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _flatten(x, self.config) @ self.weight.T + self.bias  # (B, C)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cfg = self.config
        scores = upcast(self(batch["x"]))
        if cfg.loss == "svm":
            data_loss = multiclass_svm_loss(scores, batch["y"], cfg.margin)
        else:
            data_loss = softmax_cross_entropy(scores, batch["y"])
        penalty = regularization(self.weight, cfg.regularization, cfg.elastic_beta)
        return {
            "loss": data_loss + cfg.reg_strength * penalty,
            "data_loss": data_loss,
            "accuracy": _accuracy(scores, batch["y"]),
        }


class TwoLayerFunction(torch.autograd.Function):
    """s = relu(x W1^T + b1) W2^T + b2 with its backward written out:

    dW2 = ds^T h,  db2 = sum_n ds,  dh = ds W2,  dz = dh * 1[z > 0],
    dW1 = dz^T x,  db1 = sum_n dz,  dx = dz W1     (z = x W1^T + b1, h = relu(z))
    """

    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2):
        z = x @ w1.T + b1  # (B, H)
        h = z.clamp(min=0)
        ctx.save_for_backward(x, w1, w2, z, h)
        return h @ w2.T + b2  # (B, C)

    @staticmethod
    def backward(ctx, ds):
        x, w1, w2, z, h = ctx.saved_tensors
        dh = ds @ w2
        dz = dh * (z > 0).to(dh.dtype)
        return dz @ w1, dz.T @ x, dz.sum(0), ds.T @ h, ds.sum(0)


class TwoLayerNet(nn.Module):
    def __init__(self, config: TwoLayerConfig = TwoLayerConfig()) -> None:
        super().__init__()
        self.config = config
        self.w1 = nn.Parameter(kaiming_normal_(torch.empty(config.hidden, config.input_dim)))
        self.b1 = nn.Parameter(torch.zeros(config.hidden))
        self.w2 = nn.Parameter(kaiming_normal_(torch.empty(config.num_classes, config.hidden)) * 0.1)
        self.b2 = nn.Parameter(torch.zeros(config.num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return TwoLayerFunction.apply(_flatten(x, self.config), self.w1, self.b1, self.w2, self.b2)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        scores = upcast(self(batch["x"]))
        data_loss = softmax_cross_entropy(scores, batch["y"])
        penalty = regularization(self.w1, "l2") + regularization(self.w2, "l2")
        return {
            "loss": data_loss + self.config.reg_strength * penalty,
            "data_loss": data_loss,
            "accuracy": _accuracy(scores, batch["y"]),
        }
