"""Per-frame AP, calibrated AP and portion mAP (metrics/online.py) against brute force,
scikit-learn's average precision and their defining properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score  # a test dependency (pyproject's dev extra)

from deepzoo.metrics.online import (
    action_position,
    average_precision,
    calibrated_average_precision,
    per_frame_map,
    portion_map,
)


def brute_force_ap(scores: list[float], positive: list[bool]) -> float:
    """sum_n (R_n - R_{n-1}) P_n over the distinct thresholds, from their definitions."""
    n_pos, ap, last_recall = sum(positive), 0.0, 0.0
    for threshold in sorted(set(scores), reverse=True):
        chosen = [p for s, p in zip(scores, positive) if s >= threshold]
        recall = sum(chosen) / n_pos
        ap += (recall - last_recall) * sum(chosen) / len(chosen)
        last_recall = recall
    return ap


def brute_force_cap(scores: list[float], positive: list[bool]) -> float:
    """TVSeries' cAP without ties: mean over positives of TP / (TP + FP / w) down to each."""
    n_pos = sum(positive)
    w = (len(positive) - n_pos) / n_pos
    total = 0.0
    for s, p in zip(scores, positive):
        if p:
            tp = sum(q for t, q in zip(scores, positive) if t >= s)
            fp = sum(not q for t, q in zip(scores, positive) if t >= s)
            total += tp / (tp + fp / w)
    return total / n_pos


def test_ap_matches_scikit_learns_documented_example():
    # sklearn.metrics.average_precision_score's docstring: y = [0, 0, 1, 1], scores
    # [0.1, 0.4, 0.35, 0.8] -> 0.83 (= 1/2 * 1 + 1/2 * 2/3)
    ap = average_precision(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([False, False, True, True]))
    assert ap == pytest.approx(5 / 6)


@pytest.mark.parametrize("decimals", [None, 1])
def test_ap_and_cap_match_brute_force(decimals):
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        n = int(torch.randint(2, 40, (1,), generator=generator))
        positive = torch.rand(n, generator=generator) < 0.3
        positive[0] = True
        scores = torch.rand(n, generator=generator) + 0.3 * positive
        if decimals is not None:  # many ties
            scores = (scores * 10).round() / 10
        s, p = scores.tolist(), positive.tolist()
        assert average_precision(scores, positive) == pytest.approx(brute_force_ap(s, p), abs=1e-12)
        if decimals is None and not positive.all():
            assert calibrated_average_precision(scores, positive) == pytest.approx(
                brute_force_cap(s, p), abs=1e-12
            )


def test_tied_scores_enter_together_so_frame_order_does_not_matter():
    generator = torch.Generator().manual_seed(1)
    scores = torch.randint(0, 4, (50,), generator=generator).float()
    positive = torch.rand(50, generator=generator) < 0.4
    order = torch.randperm(50, generator=generator)
    for metric in (average_precision, calibrated_average_precision):
        assert metric(scores, positive) == pytest.approx(metric(scores[order], positive[order]), abs=1e-12)


def test_cap_is_ap_when_classes_balance_and_ignores_the_number_of_negatives():
    generator = torch.Generator().manual_seed(2)
    scores = torch.rand(40, generator=generator)
    positive = torch.zeros(40, dtype=torch.bool)
    positive[torch.randperm(40, generator=generator)[:20]] = True
    ap, cap = average_precision(scores, positive), calibrated_average_precision(scores, positive)
    assert cap == pytest.approx(ap, abs=1e-12)  # w = 1
    # every negative twice: FP and w double, calibrated precision is unchanged, AP drops
    doubled_scores = torch.cat([scores, scores[~positive]])
    doubled = torch.cat([positive, torch.zeros(20, dtype=torch.bool)])
    assert calibrated_average_precision(doubled_scores, doubled) == pytest.approx(cap, abs=1e-12)
    assert average_precision(doubled_scores, doubled) < ap


def test_edge_cases():
    assert math.isnan(average_precision(torch.rand(5), torch.zeros(5, dtype=torch.bool)))
    assert calibrated_average_precision(torch.rand(3), torch.ones(3, dtype=torch.bool)) == 1.0
    # the positives ranked last: AP = mean over positives of k / rank
    assert average_precision(
        torch.tensor([3.0, 2.0, 1.0]), torch.tensor([False, False, True])
    ) == pytest.approx(1 / 3)


def one_hot_streams(labels: torch.Tensor, classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels, classes).float()


def test_perfect_scores_give_one_and_unscored_frames_and_background_are_left_out():
    generator = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 4, (3, 50), generator=generator)
    target = one_hot_streams(labels, 4)
    result = per_frame_map(target.clone(), target)
    assert result["map"] == 1.0 and result["mcap"] == 1.0 and math.isnan(result["ap"][0])
    # frames with an all-zero target row are not scored, whatever their scores
    scores = target.clone()
    target[:, :10] = 0
    scores[:, :10] = 2.0  # above every scored frame: as negatives they would cost AP
    assert per_frame_map(scores, target)["map"] == 1.0
    # background's scores do not enter the mean: a background score of noise changes nothing
    scores[..., 0] = torch.rand(3, 50, generator=generator)
    assert per_frame_map(scores, target)["map"] == 1.0


def test_map_is_the_mean_of_per_class_ap_over_classes_with_positives():
    generator = torch.Generator().manual_seed(4)
    labels = torch.randint(0, 3, (2, 40), generator=generator)  # class 3 never occurs
    target = one_hot_streams(labels, 4)
    scores = torch.rand(2, 40, 4, generator=generator)
    result = per_frame_map(scores, target)
    expected = [average_precision(scores[..., c].flatten(), target[..., c].flatten() > 0) for c in (1, 2)]
    assert math.isnan(result["ap"][3])
    assert result["map"] == pytest.approx(sum(expected) / 2, abs=1e-12)


def test_per_frame_ap_is_scikit_learns_average_precision_score_on_the_scored_frames():
    """As the TRN evaluation computes it: per action class, average_precision_score over the frames
    with a label; mAP their mean. Scores on a grid of 0.05 (many ties), some frames with two labels,
    some with none (not scored), class 4 absent (NaN, out of the mean)."""
    generator = torch.Generator().manual_seed(5)
    for _ in range(5):
        target = one_hot_streams(torch.randint(0, 4, (3, 60), generator=generator), 5)
        target[:, ::7, 2] = 1  # a second label on some frames
        target[:, 5:9] = 0  # unlabelled frames
        scores = (torch.rand(3, 60, 5, generator=generator) * 20).round() / 20 + 0.2 * target
        result = per_frame_map(scores, target)
        scored = target.flatten(0, 1).sum(1) > 0
        y, s = target.flatten(0, 1)[scored].numpy(), scores.flatten(0, 1)[scored].double().numpy()
        expected = [average_precision_score(y[:, c], s[:, c]) for c in (1, 2, 3)]
        np.testing.assert_allclose(result["ap"][1:4], expected, rtol=1e-12)
        assert math.isnan(result["ap"][0]) and math.isnan(result["ap"][4])
        assert result["map"] == pytest.approx(np.mean(expected), rel=1e-12)


def test_action_position_counts_within_each_run():
    labels = torch.tensor([[0, 1, 1, 1, 0, 1, 2, 2]])
    position, length = action_position(one_hot_streams(labels, 3))
    assert position[0, :, 1].tolist() == [0, 0, 1, 2, 0, 0, 0, 0]
    assert length[0, :, 1].tolist() == [0, 3, 3, 3, 0, 1, 0, 0]
    assert position[0, :, 2].tolist() == [0, 0, 0, 0, 0, 0, 0, 1]
    assert length[0, :, 0].tolist() == [1, 0, 0, 0, 1, 0, 0, 0]


def test_portion_map_sees_a_detector_that_is_late():
    """Scores right only in the second half of each action: AP 1 on late portions, < 1 early."""
    generator = torch.Generator().manual_seed(5)
    labels = torch.zeros(4, 100, dtype=torch.long)
    for stream in labels:
        for start in range(5, 95, 18):
            stream[start : start + 10] = int(torch.randint(1, 3, (1,), generator=generator))
    target = one_hot_streams(labels, 3)
    position, length = action_position(target)
    late = (position.double() / length.clamp(min=1) >= 0.5) & (target > 0)
    scores = late.float()
    scores[..., 0] = 1 - scores[..., 1:].amax(-1)
    early, second_half = portion_map(scores, target, [(0.0, 0.5), (0.5, 1.0)])
    assert second_half == 1.0
    assert early < 0.5
    # early, by hand: its positives are the frames at positions 0-4 of 10 ([0, 0.5) excludes the
    # frame at exactly 0.5), all scored 0 like every negative: one tie, AP = positives / frames
    by_class = []
    for c in (1, 2):
        marked = target[..., c] > 0
        positive = marked & (position[..., c] < 5)
        negative = ~marked
        by_class.append(positive.sum().item() / (positive.sum() + negative.sum()).item())
    assert early == pytest.approx(sum(by_class) / 2, abs=1e-12)
    assert portion_map(target.clone(), target, [(0.0, 0.1), (0.9, 1.0)]) == [1.0, 1.0]
