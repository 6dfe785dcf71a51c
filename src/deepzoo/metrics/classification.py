"""Accuracy and the confusion matrix of a classifier over a whole dataset."""

from __future__ import annotations

import torch
from torch import nn

from deepzoo.data.tensors import EVAL_BATCH, TensorData


def confusion_matrix(target: torch.Tensor, predicted: torch.Tensor, num_classes: int) -> torch.Tensor:
    """C[i, j] = #{n : target_n = i and predicted_n = j}, int64 (K, K)."""
    flat = target.long() * num_classes + predicted.long()
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
