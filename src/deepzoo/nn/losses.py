"""Classification losses with hand-written backward passes, and weight regularizers.

scores s: (N, C), labels y: (N,); the loss is the mean over examples (CS231n notation).
- Multiclass SVM (Weston & Watkins):  L_i = sum_{j != y_i} max(0, s_j - s_{y_i} + margin)
    dL_i/ds_j = 1[s_j - s_{y_i} + margin > 0] (j != y_i);  dL_i/ds_{y_i} = -sum_{j != y_i} of those.
- Softmax cross-entropy:  L_i = -log(e^{s_{y_i}} / sum_j e^{s_j}),  dL_i/ds = softmax(s) - onehot(y_i).
"""

from __future__ import annotations

import torch


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
