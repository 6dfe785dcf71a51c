"""Retrieval ranks and recall on hand-made matrices, the Gaussian smoothing against scipy, motion
beats of a known speed curve, and the Beat Align Score against its formula."""

import math

import pytest
import torch
from scipy import ndimage  # a test dependency (pyproject's dev extra)

from deepzoo.metrics.retrieval import (
    _gaussian_smooth,
    beat_align_score,
    dance_beat_align_score,
    kinetic_beats,
    match_ranks,
    retrieval_metrics,
)


def test_ranks_count_every_candidate_at_least_as_similar_ties_against():
    sim = torch.tensor(
        [
            [0.9, 0.1, 0.2],  # match first
            [0.5, 0.5, 0.7],  # a tie with candidate 0 and a better candidate 2: rank 3
            [0.3, 0.8, 0.1],  # last
        ]
    )
    assert match_ranks(sim).tolist() == [1, 3, 3]
    brute = [1 + sum(sim[i, j] >= sim[i, i] for j in range(3) if j != i) for i in range(3)]
    assert match_ranks(sim).tolist() == [int(r) for r in brute]


def test_each_direction_ranks_its_own_queries_and_reports_the_median_rank():
    """Rows (a -> b) rank the matches 1, 3, 3; columns (b -> a) 1, 2, 3: the directions differ,
    and the median rank is a median (3 and 2), not a mean (7/3 and 2)."""
    sim = torch.tensor([[0.9, 0.1, 0.2], [0.5, 0.5, 0.7], [0.3, 0.8, 0.1]])
    m = retrieval_metrics(sim, ks=(1, 2))
    assert (m["a2b_recall@2"], m["a2b_median_rank"]) == pytest.approx((1 / 3, 3))
    assert (m["b2a_recall@2"], m["b2a_median_rank"]) == pytest.approx((2 / 3, 2))


def test_retrieval_metrics_in_both_directions():
    torch.manual_seed(0)
    perfect = retrieval_metrics(torch.eye(20) + 0.01 * torch.rand(20, 20))
    assert perfect["a2b_recall@1"] == 1 and perfect["b2a_median_rank"] == 1
    # rows: every query's match is 3rd (two larger entries); columns: the match is first
    n = 12
    sim = torch.zeros(n, n)
    for i in range(n):
        sim[i, i] = 1.0
        sim[i, (i + 1) % n] = sim[i, (i + 2) % n] = 2.0
    m = retrieval_metrics(sim, ks=(1, 2, 3))
    assert (m["a2b_recall@1"], m["a2b_recall@2"], m["a2b_recall@3"], m["a2b_median_rank"]) == (0, 0, 1, 3)
    # column j: entries 2.0 from rows j - 1 and j - 2 beat the match 1.0
    assert m["b2a_recall@3"] == 1 and m["b2a_recall@2"] == 0
    with pytest.raises(ValueError, match="square"):
        retrieval_metrics(torch.zeros(3, 4))


def test_float64_similarities_are_ranked_in_float64():
    """1 + 1e-12 beats 1 in float64 but ties it in float32 (where a tie counts against the match)."""
    sim = torch.tensor([[1.0 + 1e-12, 1.0], [0.0, 1.0]], dtype=torch.float64)
    m = retrieval_metrics(sim, ks=(1,))
    assert m["a2b_recall@1"] == 1 and m["a2b_median_rank"] == 1


def test_ranks_take_more_candidates_than_queries_but_not_fewer():
    """Query i's match is candidate i, so an (N, M) matrix needs N <= M; the extra candidates
    compete as the others do."""
    sim = torch.tensor([[0.9, 0.1, 0.95], [0.2, 0.8, 0.1]])
    assert match_ranks(sim).tolist() == [2, 1]
    with pytest.raises(ValueError, match="N <= M"):
        match_ranks(sim.T)


@pytest.mark.parametrize("length", [200, 7])
def test_gaussian_smoothing_is_scipys_gaussian_filter1d(length):
    torch.manual_seed(0)
    x = torch.randn(length, dtype=torch.float64)
    expected = torch.from_numpy(ndimage.gaussian_filter1d(x.numpy(), 5.0))
    torch.testing.assert_close(_gaussian_smooth(x, 5.0), expected, rtol=0, atol=1e-12)


def sine_speed_joints() -> torch.Tensor:
    """(301, 4, 3) joints moving along x, the displacement from frame t to t + 1 being
    |sin(pi t / 30)| + 0.1: they slow down at t = 30, 60, ..., 270."""
    t = torch.arange(300, dtype=torch.float64)
    speed = torch.sin(math.pi * t / 30).abs() + 0.1
    position = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(speed, 0)])  # (301,)
    joints = torch.stack([position, torch.zeros_like(position), torch.zeros_like(position)], dim=-1)
    return joints[:, None, :].expand(301, 4, 3)


def test_kinetic_beats_are_the_minima_of_joint_speed():
    """The beats are the speed curve's indices of its minima, as Bailando's `calc_db` returns them."""
    joints = sine_speed_joints()
    assert kinetic_beats(joints).tolist() == [30, 60, 90, 120, 150, 180, 210, 240, 270]
    with pytest.raises(ValueError, match="joint positions"):
        kinetic_beats(torch.zeros(10, 72))
    with pytest.raises(ValueError, match="T >= 4"):
        kinetic_beats(torch.zeros(3, 4, 3))  # too short for one interior point of the speed curve


def test_kinetic_beats_of_random_motion_are_bailandos_calc_db():
    """calc_db: the mean joint speed, scipy's gaussian_filter1d with sigma 5, then
    argrelextrema(np.less); on a random walk of 24 joints, whose many minima move when the
    smoothing width does (so the default sigma 5 is checked too)."""
    import numpy as np
    from scipy.signal import argrelextrema

    generator = torch.Generator().manual_seed(0)
    joints = torch.randn(240, 24, 3, generator=generator, dtype=torch.float64).cumsum(0)
    speed = (joints[1:] - joints[:-1]).norm(dim=-1).mean(dim=1).numpy()
    expected = argrelextrema(ndimage.gaussian_filter1d(speed, 5.0), np.less)[0].tolist()
    assert len(expected) > 5 and kinetic_beats(joints).tolist() == expected


def test_a_held_speed_is_no_beat_as_in_scipys_strict_argrelextrema(monkeypatch):
    """Bailando takes argrelextrema(speed, np.less): strictly below both neighbours. A speed held
    for two frames at the bottom of a valley is no beat, a single slowest frame is. (Smoothing
    off, so the ties are exact: integer speeds along x.)"""
    import numpy as np
    from scipy.signal import argrelextrema

    import deepzoo.metrics.retrieval as retrieval

    monkeypatch.setattr(retrieval, "_gaussian_smooth", lambda speed, sigma: speed)
    speed = torch.tensor([3.0, 2.0, 1.0, 1.0, 2.0, 3.0, 2.0, 3.0], dtype=torch.float64)
    position = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(speed, 0)])
    joints = torch.stack([position, torch.zeros_like(position), torch.zeros_like(position)], -1)[:, None]
    expected = argrelextrema(speed.numpy(), np.less)[0].tolist()
    assert expected == [6] and kinetic_beats(joints.expand(-1, 3, 3)).tolist() == expected


def test_beat_align_score_by_its_formula():
    beats = torch.tensor([10, 40, 70, 100])
    assert beat_align_score(beats, beats) == 1.0
    scores = [beat_align_score(beats, beats + shift) for shift in range(6)]
    assert all(a > b for a, b in zip(scores, scores[1:], strict=False))
    assert scores[2] == pytest.approx(math.exp(-4 / 18), abs=1e-12)
    # averaged over music beats, each against its nearest motion beat
    music, motion = torch.tensor([0, 30, 60]), torch.tensor([1, 33, 90, 95])
    expected = (math.exp(-1 / 18) + math.exp(-9 / 18) + math.exp(-900 / 18)) / 3
    assert beat_align_score(music, motion) == pytest.approx(expected, abs=1e-12)
    assert beat_align_score(music, torch.tensor([], dtype=torch.long)) == 0.0


def test_a_dances_beat_align_score_reads_the_music_over_its_speed_curves_frames():
    """Bailando's `calc_ba_score`: the music's beats are cut to the T - 1 frames of the speed curve,
    so a music beat on the dance's last frame, far from every kinetic beat, costs nothing."""
    joints = sine_speed_joints()
    music = torch.zeros(301, dtype=torch.bool)
    music[[30, 60, 90]] = True
    assert dance_beat_align_score(joints, music) == 1.0
    music[300] = True  # the last frame: beyond the speed curve's 300 frames
    assert dance_beat_align_score(joints, music) == 1.0
    music[299] = True  # within them, 29 frames from the beat at 270
    assert dance_beat_align_score(joints, music) == pytest.approx(
        (3 + math.exp(-(29**2) / 18)) / 4, abs=1e-12
    )
