"""Classification losses with hand-written backward passes, and weight regularizers.

scores s: (N, C), labels y: (N,); the loss is the mean over examples (CS231n notation).
- Multiclass SVM (Weston & Watkins):  L_i = sum_{j != y_i} max(0, s_j - s_{y_i} + margin)
    dL_i/ds_j = 1[s_j - s_{y_i} + margin > 0] (j != y_i);  dL_i/ds_{y_i} = -sum_{j != y_i} of those.
- Softmax cross-entropy:  L_i = -log(e^{s_{y_i}} / sum_j e^{s_j}),  dL_i/ds = softmax(s) - onehot(y_i).
Also the perceptual (LPIPS-style) distance on a fixed network's features, `PerceptualLoss`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from deepzoo.nn.precision import upcast


class MulticlassSVMLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, scores: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
        correct = scores.gather(1, labels[:, None])  # (N, 1)
        margins = (scores - correct + margin).clamp(min=0)
        margins.scatter_(1, labels[:, None], 0.0)
        ctx.save_for_backward(margins, labels)
        return margins.sum() / scores.shape[0]

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        margins, labels = ctx.saved_tensors
        active = (margins > 0).to(margins.dtype)  # (N, C)
        active.scatter_(1, labels[:, None], -active.sum(dim=1, keepdim=True))
        return grad_output * active / margins.shape[0], None, None


class SoftmaxCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        shifted = scores - scores.amax(dim=1, keepdim=True)  # e^{s - max} cannot overflow
        log_probs = shifted - shifted.exp().sum(dim=1, keepdim=True).log()
        ctx.save_for_backward(log_probs, labels)
        return -log_probs.gather(1, labels[:, None]).mean()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        log_probs, labels = ctx.saved_tensors
        grad = log_probs.exp()
        grad.scatter_add_(1, labels[:, None], -torch.ones_like(labels[:, None], dtype=grad.dtype))
        return grad_output * grad / log_probs.shape[0], None


def multiclass_svm_loss(scores: torch.Tensor, labels: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Mean multiclass hinge loss (see the module docstring)."""
    _check(scores, labels)
    return MulticlassSVMLoss.apply(scores, labels, margin)


def softmax_cross_entropy(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean softmax cross-entropy in nats (see the module docstring)."""
    _check(scores, labels)
    return SoftmaxCrossEntropy.apply(scores, labels)


def _check(scores: torch.Tensor, labels: torch.Tensor) -> None:
    if scores.ndim != 2 or labels.shape != scores.shape[:1]:
        raise ValueError(
            f"expected scores (N, C) and labels (N,), got {tuple(scores.shape)}, {tuple(labels.shape)}"
        )


def regularization(weight: torch.Tensor, kind: str, beta: float = 1.0) -> torch.Tensor:
    """R(W): l2 = sum W^2, l1 = sum |W|, elastic = sum beta W^2 + |W| (the notes' elastic net), none = 0."""
    if kind == "l2":
        return weight.pow(2).sum()
    if kind == "l1":
        return weight.abs().sum()
    if kind == "elastic":
        return (beta * weight.pow(2) + weight.abs()).sum()
    if kind == "none":
        return weight.new_zeros(())
    raise ValueError(f"regularization must be l2, l1, elastic or none, got {kind!r}")


class PerceptualLoss(nn.Module):
    """An LPIPS-style distance on the activations of a fixed network (Zhang et al., 2018, "The
    Unreasonable Effectiveness of Deep Features as a Perceptual Metric", their unweighted
    "baseline" form: no learned per-channel weights):

        d(x, y) = sum_l mean_{h,w} || f_l(x)_hw / ||f_l(x)_hw|| - f_l(y)_hw / ||f_l(y)_hw|| ||^2

    f_l is the output of layer `taps[l]` of the Sequential `net` on the standardized input
    (x - mean) / std; each position's channel vector is unit-normalized, so every term lies in
    [0, 4]. The network is frozen: no parameter of it trains and it stays in eval mode (its
    BatchNorm statistics fixed) even inside a model put in train mode. x, y: (B, C, H, W) ->
    (B,) float32.
    """

    def __init__(self, net: nn.Sequential, taps: Sequence[int], mean: float = 0.0, std: float = 1.0) -> None:
        super().__init__()
        if not taps or max(taps) >= len(net) or min(taps) < 0:
            raise ValueError(f"taps must index layers of the {len(net)}-layer network, got {list(taps)}")
        self.net = copy.deepcopy(net[: max(taps) + 1]).eval().requires_grad_(False)
        for layer in self.net:
            if getattr(layer, "inplace", False):
                layer.inplace = False  # a tapped activation must not be overwritten
        self.taps, self.mean, self.std = tuple(taps), mean, std

    def train(self, mode: bool = True) -> PerceptualLoss:
        return super().train(False)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The unit-normalized activations f_l / ||f_l|| at each tap, (B, C_l, H_l, W_l), at least float32."""
        h, out = (x - self.mean) / self.std, []
        for i, layer in enumerate(self.net):
            h = layer(h)
            if i in self.taps:
                out.append(F.normalize(upcast(h), dim=1, eps=1e-10))
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx, fy = self.features(x), self.features(y)
        return sum((a - b).square().sum(1).mean((1, 2)) for a, b in zip(fx, fy))
