"""Dance metrics in the conventions of AIST++ (Li et al., 2021) and Bailando (Li et al., 2022), on
joint positions (T, 24, 3) in metres, y up, 60 frames per second (`data.skeleton.forward_kinematics`
turns 75-d SMPL motion into them). The Beat Align Score is `metrics.retrieval.beat_align_score`.

Kinetic features (fairmotion's, which AIST++ and Bailando use; 3 per joint, 72 in all): with the
frame displacements d_k = p_k - p_{k-1} (k = 1..T-1) and second differences
a_k = (p_{k+1} - 2 p_k + p_{k-1}) / dt^2 (k = 1..T-2), for every frame i = 1..T-1

    v_i = mean_{k in [i-w, i+w], valid} d_k / dt,     A_i = mean_{k in [i-w, i+w], valid} a_k,

window w = 2, dt = 1/60, and per joint

    horizontal kinetic energy  mean_i |v_i,xz|^2,   vertical  mean_i v_i,y^2,   energy expenditure  mean_i |A_i|.

FID_k is the Fréchet distance between the kinetic features of generated and of ground-truth dances,
after both are standardized with the ground truth's per-feature mean and standard deviation (as
Bailando's `quantized_metrics` does; positions are taken relative to the first frame's root).
Diversity is the mean Euclidean distance between the standardized features of all pairs of dances.
Foot skating is the mean horizontal speed of the feet while in contact with the ground.
"""

from __future__ import annotations

import torch

from deepzoo.metrics.fid import feature_statistics, frechet_distance

FRAME_TIME = 1.0 / 60.0
"""Seconds per frame of AIST++ motion (60 FPS)."""
FEET = (10, 11)
"""SMPL joints of the left and right foot (data/skeleton.py)."""


def _windowed_means(values: torch.Tensor, first: int, frames: torch.Tensor, window: int) -> torch.Tensor:
    """values (K, J, 3) holding the entries k = first .. first + K - 1; frames (F,) -> (F, J, 3),
    row f the mean of the entries k in [frames[f] - window, frames[f] + window] that exist."""
    cumulative = torch.cat([torch.zeros_like(values[:1]), values.cumsum(0)])  # prefix sums
    lo = (frames - window - first).clamp(0, len(values))
    hi = (frames + window - first + 1).clamp(0, len(values))
    count = (hi - lo).clamp(min=1).to(values.dtype).view(-1, 1, 1)
    return (cumulative[hi] - cumulative[lo]) / count


def kinetic_features(
    joints: torch.Tensor, frame_time: float = FRAME_TIME, window: int = 2, up: int = 1
) -> torch.Tensor:
    """joints (T, J, 3), T >= 3 -> (3 J,) float64: for each joint, [horizontal kinetic energy,
    vertical kinetic energy, energy expenditure] (module docstring)."""
    if joints.ndim != 3 or joints.shape[-1] != 3 or len(joints) < 3:
        raise ValueError(f"need joint positions (T >= 3, J, 3), got {tuple(joints.shape)}")
    p = joints.double()
    T = len(p)
    frames = torch.arange(1, T)
    velocity = _windowed_means(p[1:] - p[:-1], 1, frames, window) / frame_time  # (T-1, J, 3)
    accel = (p[2:] - 2 * p[1:-1] + p[:-2]) / frame_time**2  # entries k = 1..T-2
    acceleration = _windowed_means(accel, 1, frames, window)
    horizontal = [axis for axis in range(3) if axis != up]
    kinetic_h = velocity[..., horizontal].square().sum(-1).mean(0)  # (J,)
    kinetic_v = velocity[..., up].square().mean(0)
    expenditure = acceleration.norm(dim=-1).mean(0)
    return torch.stack([kinetic_h, kinetic_v, expenditure], dim=1).flatten()


def relative_to_start(joints: torch.Tensor) -> torch.Tensor:
    """(T, J, 3) positions minus the root's position in the first frame (Bailando's convention)."""
    return joints - joints[:1, :1]


def standardize(features: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """(N, D) features standardized with the (M, D) reference's per-feature mean and (biased)
    standard deviation, + 1e-10 (Bailando's `normalize`)."""
    reference = reference.double()
    mean, std = reference.mean(0), reference.std(0, unbiased=False)
    return (features.double() - mean) / (std + 1e-10)


def feature_fid(features: torch.Tensor, reference: torch.Tensor) -> float:
    """Fréchet distance between (N, D) features and (M, D) ground-truth features, both standardized
    by the ground truth's statistics (FID_k with kinetic features)."""
    a, b = standardize(features, reference), standardize(reference, reference)
    return frechet_distance(*feature_statistics(a), *feature_statistics(b))


def diversity(features: torch.Tensor, reference: torch.Tensor | None = None) -> float:
    """Mean Euclidean distance over all pairs i < j of the (N, D) features (standardized by the
    reference's statistics when given, as Bailando reports it)."""
    f = standardize(features, reference) if reference is not None else features.double()
    if len(f) < 2:
        raise ValueError("diversity needs at least two dances")
    distances = torch.cdist(f, f)
    n = len(f)
    return float(distances.triu(1).sum() / (n * (n - 1) / 2))


def foot_skating(
    joints: torch.Tensor,
    contact_height: float = 0.05,
    frame_time: float = FRAME_TIME,
    up: int = 1,
    feet: tuple[int, ...] = FEET,
) -> float:
    """Mean horizontal speed (m/s) of the feet over the frames where a foot is in contact: within
    `contact_height` of the lowest height any foot reaches in the sequence (the ground), in both
    frames of the step. 0 when no foot ever touches (joints (T, J, 3), T >= 2)."""
    if joints.ndim != 3 or len(joints) < 2:
        raise ValueError(f"need joint positions (T >= 2, J, 3), got {tuple(joints.shape)}")
    f = joints[:, list(feet)].double()  # (T, F, 3)
    height = f[..., up]
    contact = height <= height.min() + contact_height
    horizontal = [axis for axis in range(3) if axis != up]
    speed = (f[1:, :, horizontal] - f[:-1, :, horizontal]).norm(dim=-1) / frame_time  # (T-1, F)
    both = contact[1:] & contact[:-1]
    return float(speed[both].mean()) if both.any() else 0.0
