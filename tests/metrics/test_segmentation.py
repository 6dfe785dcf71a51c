"""Segmentation metrics against per-class counts by brute force and against scikit-learn."""

import math

import numpy as np
import pytest
import torch
from sklearn import metrics  # a test dependency (pyproject's dev extra)

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


def test_scores_are_scikit_learns_jaccard_balanced_accuracy_and_accuracy():
    """IoU = jaccard_score per class (NaN for a class in neither map, left out of mIoU), mean
    accuracy = balanced_accuracy_score (the recall of the classes in the truth), pixel accuracy =
    accuracy_score, all over the pixels not ignored."""
    g = torch.Generator().manual_seed(1)
    target = torch.randint(0, 5, (4, 16, 16), generator=g)
    noise = torch.randint(0, 7, (4, 16, 16), generator=g)
    pred = torch.where(torch.rand(4, 16, 16, generator=g) < 0.6, target, noise)  # 5, 6 predicted only
    target[:, :2] = 255
    confusion = confusion_matrix(pred, target, num_classes=8, ignore_index=255)
    keep = target != 255
    t, p = target[keep].numpy(), pred[keep].numpy()
    np.testing.assert_array_equal(confusion.numpy(), metrics.confusion_matrix(t, p, labels=range(8)))
    scores = segmentation_scores(confusion)
    present = np.union1d(t, p)  # 0-6; class 7 is in neither map
    iou = metrics.jaccard_score(t, p, labels=present, average=None)
    np.testing.assert_allclose(np.array(scores["iou"])[present], iou, rtol=1e-12)
    assert math.isnan(scores["iou"][7])
    mean_iou = metrics.jaccard_score(t, p, labels=present, average="macro")
    assert scores["miou"] == pytest.approx(mean_iou, rel=1e-12)
    assert scores["pixel_accuracy"] == pytest.approx(metrics.accuracy_score(t, p), rel=1e-12)
    with np.errstate(all="ignore"), pytest.warns(UserWarning, match="classes not in y_true"):
        balanced = metrics.balanced_accuracy_score(t, p)
    assert scores["mean_accuracy"] == pytest.approx(balanced, rel=1e-12)


def test_bad_maps_are_refused():
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(torch.zeros(2, 3), torch.zeros(3, 2), 2)
    with pytest.raises(ValueError, match="classes"):
        confusion_matrix(torch.full((2, 2), 3), torch.zeros(2, 2), 2)
    with pytest.raises(ValueError, match=r"target classes must be in \[0, 2\), got 0..2"):
        confusion_matrix(torch.zeros(2, 2), torch.tensor([[0, 1], [2, 1]]), 2)  # K itself is out
    with pytest.raises(ValueError, match="prediction classes"):
        confusion_matrix(torch.tensor([[0, -1], [1, 1]]), torch.zeros(2, 2), 2)
