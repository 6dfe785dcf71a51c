"""3D shape metrics against brute force: voxel IoU, nearest distances in chunks, Chamfer (ops/points.py),
F-score."""

import math

import pytest
import torch

from deepzoo.metrics.shape import (
    chamfer_distance,
    cloud_scores,
    f_score,
    f_scores,
    nearest_distances,
    voxel_iou,
)


def test_voxel_iou_of_identical_disjoint_and_overlapping_shapes():
    a = torch.zeros(2, 4, 4, 4, dtype=torch.bool)
    a[0, :2] = True  # 32 voxels
    b = torch.zeros_like(a)
    b[0, 1:3] = True  # 32 voxels, 16 shared
    assert voxel_iou(a, a).tolist() == [1.0, 1.0]  # both empty in the second grid: identical
    assert voxel_iou(a[:1], ~a[:1]).tolist() == [0.0]
    assert voxel_iou(a, b)[0].item() == pytest.approx(16 / 48)
    with pytest.raises(ValueError, match="shape"):
        voxel_iou(a, b[:, :2])


def _nearest_by_hand(a, b):
    return [min(math.dist(p, q) for q in b) for p in a]


@pytest.mark.parametrize("budget", [1, 50, 2**24])
def test_nearest_distances_in_chunks_equal_brute_force(budget):
    """A budget of 1 float searches one point at a time; 50, a few; the default, all at once."""
    g = torch.Generator().manual_seed(0)
    a, b = (
        torch.randn(37, 3, generator=g, dtype=torch.float64),
        torch.randn(23, 3, generator=g, dtype=torch.float64),
    )
    want = torch.tensor(_nearest_by_hand(a.tolist(), b.tolist()), dtype=torch.float64)
    torch.testing.assert_close(nearest_distances(a, b, budget), want)
    batched = nearest_distances(torch.stack([a, a.flip(0)]), torch.stack([b, b]), budget)
    torch.testing.assert_close(batched, torch.stack([want, want.flip(0)]))


def test_nearest_distances_refuse_an_empty_cloud_and_mismatched_shapes():
    a = torch.randn(5, 3)
    with pytest.raises(ValueError, match="empty"):
        nearest_distances(a, torch.zeros(0, 3))
    for b in [torch.randn(4, 2), torch.randn(2, 4, 3)]:
        with pytest.raises(ValueError, match=r"\(\.\.\., N, D\)"):
            nearest_distances(a, b)


def test_chamfer_and_f_score_equal_brute_force():
    g = torch.Generator().manual_seed(1)
    pred, true = (
        torch.rand(50, 3, generator=g, dtype=torch.float64),
        torch.rand(80, 3, generator=g, dtype=torch.float64),
    )
    d_pt, d_tp = (
        _nearest_by_hand(pred.tolist(), true.tolist()),
        _nearest_by_hand(true.tolist(), pred.tolist()),
    )
    want = sum(d * d for d in d_pt) / 50 + sum(d * d for d in d_tp) / 80
    assert chamfer_distance(pred, true, budget=100).item() == pytest.approx(want, rel=1e-12)
    assert chamfer_distance(true, pred).item() == pytest.approx(want, rel=1e-12)  # symmetric
    tau = 0.1
    precision, recall = sum(d < tau for d in d_pt) / 50, sum(d < tau for d in d_tp) / 80
    got = f_score(pred, true, tau)
    assert got["precision"] == pytest.approx(precision) and got["recall"] == pytest.approx(recall)
    assert got["f1"] == pytest.approx(2 * precision * recall / (precision + recall))
    assert 0 < precision < 1 and 0 < recall < 1
    assert f_score(pred, pred + 10, tau) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_chamfer_is_zero_on_itself_and_its_gradient_pulls_points_together():
    g = torch.Generator().manual_seed(2)
    true = torch.rand(30, 3, generator=g)
    assert chamfer_distance(true, true).item() == 0.0
    pred = (true + 0.05 * torch.randn(30, 3, generator=g)).requires_grad_()
    loss = chamfer_distance(pred, true)
    (grad,) = torch.autograd.grad(loss, pred)
    assert torch.isfinite(grad).all()
    assert chamfer_distance(pred - 0.1 * grad / grad.norm(), true) < loss


def test_f_score_counts_a_point_exactly_tau_away_as_a_miss():
    """Tatarchenko et al.'s precision counts distances strictly below tau."""
    true = torch.tensor([[0.0, 0.0, 0.0], [5.0, 0.0, 0.0]])
    pred = torch.tensor([[1.0, 0.0, 0.0], [5.0, 0.5, 0.0]])  # 1 and 0.5 from the truth
    assert f_score(pred, true, tau=1.0) == {"precision": 0.5, "recall": 0.5, "f1": 0.5}


def test_batched_f_scores_equal_one_cloud_at_a_time():
    """f_scores over (B, N, D) clouds gives each cloud's f_score, a cloud far from its truth 0;
    cloud_scores gives the same and chamfer_distance, bit for bit."""
    g = torch.Generator().manual_seed(3)
    pred, true = torch.rand(4, 40, 3, generator=g), torch.rand(4, 60, 3, generator=g)
    pred[2] += 10  # no point within tau either way
    batched = f_scores(pred, true, 0.1, budget=500)
    assert set(batched) == {"precision", "recall", "f1"} and batched["f1"].shape == (4,)
    for i in range(4):
        one = f_score(pred[i], true[i], 0.1)
        for name, value in one.items():
            assert batched[name][i].item() == pytest.approx(value, abs=1e-6), (i, name)
    assert batched["f1"][2].item() == 0.0 and 0 < batched["f1"].max() < 1
    with pytest.raises(ValueError, match="f_scores"):
        f_score(pred, true, 0.1)
    both = cloud_scores(pred, true, 0.1, budget=500)
    torch.testing.assert_close(both["chamfer"], chamfer_distance(pred, true), rtol=0, atol=0)
    for name, value in batched.items():
        torch.testing.assert_close(both[name], value, rtol=0, atol=0)
