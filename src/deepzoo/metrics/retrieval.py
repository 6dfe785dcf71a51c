"""Cross-modal retrieval (recall@k, median rank) and the Beat Align Score of music and motion.

Retrieval: N queries and N candidates, query i's match is candidate i. The rank of the match is

    rank_i = #{j : sim_ij >= sim_ii}    (1 = first; ties count against the match)

recall@k = mean(rank_i <= k), median rank = median(rank_i); both directions come from one (N, N)
similarity matrix (rows: a -> b, columns: b -> a).

Beat Align Score (Bailando, Li et al., 2022, eq. 8): with music beats B_m and motion beats B_d
(frame indices),

    BAS = 1/|B_m| sum_{t in B_m} exp(-min_{t' in B_d} (t - t')^2 / (2 sigma^2)),  sigma = 3 frames,

averaged over music beats as Bailando's `BA()` does. Motion beats are the local minima of the
kinetic speed: the mean over joints of the per-frame displacement, Gaussian-smoothed (sigma 5
frames, Bailando's `calc_db`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def match_ranks(similarity: torch.Tensor) -> torch.Tensor:
    """(N, M) similarities, query i matching candidate i (i < N <= M) -> (N,) ranks, 1 = first."""
    if similarity.ndim != 2 or similarity.shape[0] > similarity.shape[1]:
        raise ValueError(f"need an (N, M) similarity matrix with N <= M, got {tuple(similarity.shape)}")
    matched = similarity.diagonal().unsqueeze(1)
    return (similarity >= matched).sum(1)


def retrieval_metrics(similarity: torch.Tensor, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """{"a2b_recall@k", "a2b_median_rank", "b2a_..."} of a square (N, N) similarity matrix whose
    row i is query a_i against every b (so column j is b_j against every a)."""
    if similarity.ndim != 2 or similarity.shape[0] != similarity.shape[1]:
        raise ValueError(f"need a square similarity matrix, got {tuple(similarity.shape)}")
    metrics = {}
    for name, sim in (("a2b", similarity), ("b2a", similarity.T)):
        ranks = match_ranks(sim)  # in its own dtype: rounding float64 to float32 could tie scores
        for k in ks:
            metrics[f"{name}_recall@{k}"] = (ranks <= k).float().mean().item()
        metrics[f"{name}_median_rank"] = ranks.float().median().item()
    return metrics


def _gaussian_smooth(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """1-d Gaussian filter of (T,) with reflected borders (d c b a | a b c d | d c b a) and the
    kernel cut at 4 sigma: scipy's `gaussian_filter1d` defaults, which Bailando uses."""
    radius, n = int(4 * sigma + 0.5), len(x)
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    position = torch.arange(-radius, n + radius) % (2 * n)  # reflection has period 2n
    index = torch.where(position < n, position, 2 * n - 1 - position)
    return F.conv1d(x[index].view(1, 1, -1), kernel.view(1, 1, -1)).view(-1)


def kinetic_beats(joints: torch.Tensor, sigma: float = 5.0) -> torch.Tensor:
    """Motion beats of joint positions (T, J, 3): the indices t of the speed curve
    v_t = mean_j |p_{t+1, j} - p_{t, j}| (0 <= t < T - 1), Gaussian-smoothed, where it is a
    strict local minimum (so 1 <= t < T - 2; Bailando's `argrelextrema` indices)."""
    if joints.ndim != 3 or joints.shape[-1] != 3 or len(joints) < 4:
        raise ValueError(f"need joint positions (T >= 4, J, 3), got {tuple(joints.shape)}")
    speed = (joints[1:] - joints[:-1]).norm(dim=-1).mean(dim=1).double()
    speed = _gaussian_smooth(speed, sigma)
    inner = speed[1:-1]
    return torch.nonzero((inner < speed[:-2]) & (inner < speed[2:])).view(-1) + 1


def beat_align_score(music_beats: torch.Tensor, motion_beats: torch.Tensor, sigma: float = 3.0) -> float:
    """BAS of two sets of beat frame indices (see the module docstring); 0 when either is empty."""
    music_beats, motion_beats = music_beats.double().view(-1), motion_beats.double().view(-1)
    if len(music_beats) == 0 or len(motion_beats) == 0:
        return 0.0
    gap = (music_beats[:, None] - motion_beats[None, :]).abs().min(dim=1).values
    return torch.exp(-(gap**2) / (2 * sigma**2)).mean().item()


def dance_beat_align_score(joints: torch.Tensor, music_beats: torch.Tensor, sigma: float = 3.0) -> float:
    """BAS of one dance: joint positions (T, J, 3) against the music's beat flags (>= T - 1,) bool.
    The music is read over the T - 1 frames of the speed curve that the kinetic beats come from
    (Bailando's `calc_ba_score` cuts the music's beat column to that length)."""
    music = torch.nonzero(music_beats[: len(joints) - 1].cpu()).view(-1)
    return beat_align_score(music, kinetic_beats(joints), sigma)
