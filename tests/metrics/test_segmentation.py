"""Segmentation metrics against per-class counts by brute force."""

import math

import pytest
import torch

from deepzoo.metrics.segmentation import confusion_matrix, segmentation_scores


def test_iou_and_accuracies_equal_counting_pixels_by_class():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 4, (3, 8, 9), generator=g)  # class 4 never appears in the truth,
    pred = torch.where(
        torch.rand(3, 8, 9, generator=g) < 0.7, target, torch.randint(0, 5, (3, 8, 9), generator=g)
    )
    target[0, 0, :3] = 255  # ignored pixels
    scores = segmentation_scores(confusion_matrix(pred, target, num_classes=6, ignore_index=255))
    keep = target != 255
    p, t = pred[keep], target[keep]
    ious = []
    for k in range(6):
        inter, union = ((p == k) & (t == k)).sum().item(), ((p == k) | (t == k)).sum().item()
        ious.append(inter / union if union else math.nan)
    assert math.isnan(scores["iou"][5]) and scores["iou"][4] == 0.0  # predicted only: IoU 0, counted
    assert scores["iou"][:5] == pytest.approx(ious[:5])
    assert scores["miou"] == pytest.approx(sum(ious[:5]) / 5)
    assert scores["pixel_accuracy"] == pytest.approx((p == t).double().mean().item())
    accs = [((p == k) & (t == k)).sum().item() / (t == k).sum().item() for k in range(4)]
    assert scores["mean_accuracy"] == pytest.approx(sum(accs) / 4)
    perfect = segmentation_scores(confusion_matrix(target, target, 6, ignore_index=255))
    assert perfect["miou"] == 1.0 and perfect["pixel_accuracy"] == 1.0


def test_bad_maps_are_refused():
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(torch.zeros(2, 3), torch.zeros(3, 2), 2)
    with pytest.raises(ValueError, match="classes"):
        confusion_matrix(torch.full((2, 2), 3), torch.zeros(2, 2), 2)
    with pytest.raises(ValueError, match=r"target classes must be in \[0, 2\), got 0..2"):
        confusion_matrix(torch.zeros(2, 2), torch.tensor([[0, 1], [2, 1]]), 2)  # K itself is out
    with pytest.raises(ValueError, match="prediction classes"):
        confusion_matrix(torch.tensor([[0, -1], [1, 1]]), torch.zeros(2, 2), 2)
