"""Semantic segmentation metrics from one confusion matrix accumulated over a dataset.

C[i, j] = number of pixels of true class i predicted as class j (pixels labelled `ignore_index`
left out). Per class k: IoU_k = C[k, k] / (sum_j C[k, j] + sum_i C[i, k] - C[k, k]);
mIoU = the mean of IoU_k over the classes with a non-empty union (present in the truth or the
prediction; mmsegmentation's nanmean); pixel accuracy = trace(C) / sum(C); mean accuracy = the
mean over present true classes of C[k, k] / sum_j C[k, j]. The background is a class like any other.
"""

from __future__ import annotations

import torch

from deepzoo.metrics import classification


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None = None
) -> torch.Tensor:
    """(..., H, W) integer maps -> (K, K) int64 counts, rows = truth, columns = prediction: the
    classifiers' `confusion_matrix` over every pixel (prediction first here)."""
    return classification.confusion_matrix(target, pred, num_classes, ignore_index)


def segmentation_scores(confusion: torch.Tensor) -> dict[str, float | list[float]]:
    """mIoU, per-class IoU (NaN where a class is in neither truth nor prediction), pixel accuracy
    and mean class accuracy of a confusion matrix."""
    c = confusion.double()
    tp, truth, predicted = c.diagonal(), c.sum(1), c.sum(0)
    union = truth + predicted - tp
    iou = torch.where(union > 0, tp / union.clamp_min(1), torch.nan)
    acc = torch.where(truth > 0, tp / truth.clamp_min(1), torch.nan)
    return {
        "miou": iou.nanmean().item(),
        "iou": iou.tolist(),
        "pixel_accuracy": (tp.sum() / c.sum().clamp_min(1)).item(),
        "mean_accuracy": acc.nanmean().item(),
    }
