"""Accuracy and the confusion matrix of a classifier over a whole dataset."""

from __future__ import annotations

import torch
from torch import nn

from deepzoo.data.tensors import EVAL_BATCH, TensorData


def confusion_matrix(
    target: torch.Tensor, predicted: torch.Tensor, num_classes: int, ignore_index: int | None = None
) -> torch.Tensor:
    """C[i, j] = #{n : target_n = i and predicted_n = j}, int64 (K, K), over integer labels of any
    (equal) shape; targets equal to `ignore_index` are left out. A class outside [0, K) is refused."""
    if target.shape != predicted.shape:
        shapes = f"target {tuple(target.shape)} and prediction {tuple(predicted.shape)}"
        raise ValueError(f"{shapes} differ in shape")
    target, predicted = target.reshape(-1).long(), predicted.reshape(-1).long()
    if ignore_index is not None:
        keep = target != ignore_index
        target, predicted = target[keep], predicted[keep]
    for name, x in (("prediction", predicted), ("target", target)):
        if len(x) and (x.min() < 0 or x.max() >= num_classes):
            raise ValueError(f"{name} classes must be in [0, {num_classes}), got {x.min()}..{x.max()}")
    flat = target * num_classes + predicted
    return torch.bincount(flat, minlength=num_classes**2).view(num_classes, num_classes)


@torch.no_grad()
def predict(model: nn.Module, data: TensorData, batch_size: int = EVAL_BATCH) -> torch.Tensor:
    """argmax of model(x) over `data` in batches: (N,) int64."""
    return torch.cat([model(batch["x"]).argmax(dim=1) for batch in data.batches(batch_size)])


def classification_metrics(
    model: nn.Module, data: TensorData, num_classes: int = 10
) -> tuple[dict[str, float], torch.Tensor]:
    """{"accuracy", "error"} over all of `data`, and the confusion matrix (K, K)."""
    predicted = predict(model, data)
    matrix = confusion_matrix(data.tensors["y"], predicted, num_classes).cpu()
    accuracy = matrix.diag().sum().item() / matrix.sum().item()
    return {"accuracy": accuracy, "error": 1.0 - accuracy}, matrix
