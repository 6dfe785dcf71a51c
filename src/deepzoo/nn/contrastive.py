"""Contrastive losses of CLIP (Radford et al., 2021) and the per-frame motion-music variant of the
notes (`../shared/notes/ml-models.md`, "CLIP").

Batch CLIP: B pairs (a_i, b_i) of L2-normalised embeddings, logits l_ij = s <a_i, b_j> with a
learned scale s = exp(log_scale) (CLIP: log_scale starts at log(1/0.07) and s is clamped at 100),

    L = 1/2 [ CE(l, arange(B)) + CE(l^T, arange(B)) ]    (rows a -> b, then b -> a)

Per frame: B sequences of S frames, a (B, S, D) and b (B, S, D); within each sequence
l_bij = s <a_bi, b_bj> (a `bmm`), and frame i of a must find frame i of b among the S frames of
its own sequence (and, both ways, frame j of b its a_j). Negatives never cross sequences.

Under DDP the batch loss gathers b (and a) from every rank, so each local row is scored against
the global batch: rank r's loss is the mean over its own rows, and `all_gather`'s backward sends
each shard its gradient, so averaging the ranks' gradients (as `train.step` does) gives exactly
the gradient of the single-process loss on the global batch.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


class LogitScale(nn.Module):
    """s = exp(min(log_scale, log max_scale)), log_scale learned from log(1/0.07) (CLIP's init).

    The clamp is in the forward pass (the gradient is zero beyond it), so no training loop has to
    clamp the parameter after each step, as CLIP's code does."""

    def __init__(self, init_temperature: float = 0.07, max_scale: float = 100.0) -> None:
        super().__init__()
        if init_temperature <= 0 or 1 / init_temperature > max_scale:
            raise ValueError(
                f"need 0 < 1 / init_temperature <= max_scale, got {init_temperature}, {max_scale}"
            )
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / init_temperature)))
        self.max_log_scale = math.log(max_scale)

    def forward(self) -> torch.Tensor:
        return self.log_scale.clamp(max=self.max_log_scale).exp()


class _GatherWithGrad(torch.autograd.Function):
    """forward: all_gather of equal shards, concatenated in rank order; backward: every rank's
    gradient of the whole (all_reduce, which gloo and NCCL both have), cut to this rank's rows."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        rows = len(grad) // dist.get_world_size()
        return grad[dist.get_rank() * rows : (dist.get_rank() + 1) * rows]


def gather_batch(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(B, ...) on each of W ranks -> ((W B, ...) in rank order, offset of this rank's rows).

    Differentiable: the gradient of each gathered shard goes back to the rank that holds it.
    Without an initialised process group (or with one rank) x comes back as is, offset 0."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0
    return _GatherWithGrad.apply(x), dist.get_rank() * len(x)


def clip_loss(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> dict[str, torch.Tensor]:
    """The symmetric CLIP loss of paired embeddings a, b (B, D) (normalise them first; the scale
    is exp'd, e.g. `LogitScale()()`). Under DDP the negatives are the global batch (see above).

    Returns {"loss": (L_ab + L_ba) / 2, "loss_ab": a -> b, "loss_ba": b -> a, "accuracy_ab"}."""
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(
            f"clip_loss wants two (B, D) tensors of one shape, got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    all_a, offset = gather_batch(a)
    all_b, _ = gather_batch(b)
    labels = torch.arange(len(a), device=a.device) + offset
    logits_ab = scale * a @ all_b.T  # (B, W B): local rows against the global batch
    # one process: b a^T is the transpose of a b^T, so one matmul serves both directions
    logits_ba = logits_ab.T if len(all_a) == len(a) else scale * b @ all_a.T
    loss_ab, loss_ba = F.cross_entropy(logits_ab, labels), F.cross_entropy(logits_ba, labels)
    return {
        "loss": (loss_ab + loss_ba) / 2,
        "loss_ab": loss_ab.detach(),
        "loss_ba": loss_ba.detach(),
        "accuracy_ab": (logits_ab.detach().argmax(1) == labels).float().mean(),
    }


def per_frame_clip_loss(
    a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor, both_directions: bool = True
) -> dict[str, torch.Tensor]:
    """The notes' per-frame loss of a, b (B, S, D) (normalised): logits (B, S, S) = s a b^T per
    sequence, target of row i = i. "loss_ab": each frame of a picks its frame of b; "loss_ba": the
    reverse. loss = their mean (both_directions) or loss_ab alone.

    The notes call `CrossEntropyLoss()(logits, labels)` on (B, S, S) logits; that loss takes dim 1
    as the classes, so it is the b -> a direction (softmax over a's frames) that the notes name
    `loss_motion`; the sum of both directions, which they train on, is the same."""
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(
            "per_frame_clip_loss wants two (B, S, D) tensors of one shape, "
            f"got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    batch, frames, _ = a.shape
    logits = scale * torch.bmm(a, b.mT)  # (B, S_a, S_b)
    labels = torch.arange(frames, device=a.device).expand(batch, frames)
    loss_ab = F.cross_entropy(logits.flatten(0, 1), labels.flatten())
    loss_ba = F.cross_entropy(logits.mT.flatten(0, 1), labels.flatten())
    return {
        "loss": (loss_ab + loss_ba) / 2 if both_directions else loss_ab,
        "loss_ab": loss_ab.detach(),
        "loss_ba": loss_ba.detach(),
        "accuracy_ab": (logits.detach().argmax(-1) == labels).float().mean(),
    }
