"""Dance metrics in the conventions of AIST++ (Li et al., 2021) and Bailando (Li et al., 2022), on
joint positions (T, 24, 3) in metres, y up, 60 frames per second (`data.skeleton.forward_kinematics`
turns 75-d SMPL motion into them). The Beat Align Score is `metrics.retrieval.beat_align_score`.

Kinetic features (fairmotion's, which AIST++ and Bailando use; 3 per joint, 72 in all): with the
frame displacements d_k = p_k - p_{k-1} (k = 1..T-1) and second differences
a_k = (p_{k+1} - 2 p_k + p_{k-1}) / dt^2 (k = 1..T-2), for every frame i = 1..T-1

    v_i = mean_{k in [i-w, i+w], valid} d_k / dt,     A_i = mean_{k in [i-w, i+w], valid} a_k,

window w = 2, dt = 1/60, and per joint

    horizontal kinetic energy mean_i |v_i,xz|^2,  vertical mean_i v_i,y^2,  energy expenditure mean_i |A_i|.

Deliberate difference: a_k is the true second difference. fairmotion's `calc_average_acceleration`,
copied by AIST++ and Bailando, writes v1 = p_k - p_{k-1} / dt (the division binds to p_{k-1} only),
so their expenditure measures positions, not accelerations (open fixes: fairmotion PR #87,
aistplusplus_api PR #33, Bailando PR #28); FID_k here is therefore not comparable with theirs on
its 24 expenditure features.

FID_k is the Fréchet distance between the kinetic features of generated and of ground-truth dances,
after both are standardized with the ground truth's per-feature mean and standard deviation (as
Bailando's `quantized_metrics` does, except that a feature constant in the ground truth is only
centred; positions are taken relative to the first frame's root).
Diversity is the mean Euclidean distance between the standardized features of all pairs of dances.
Foot skating is the mean horizontal speed of the feet while in contact with the ground.

Geometric features (FID_g; AIST++'s "manual" features after Müller et al., 2005, "Efficient
content-based retrieval of motion capture data"): 32 boolean relations of a frame and the one
before it (is the right wrist in front of the plane of the chest? is the left knee bent under
110 degrees? is the root moving faster than 2.3 humerus lengths per unit time?), each averaged over
frames 1..T-1. The relations, thresholds and body constants are those of AIST++'s
`features/manual.py`, including its time unit of 1/120 s per frame in the velocity tests. The body
constants (humerus length hl, shoulder width sw, hip width hw) are the corrected ones of its
2021-08-31 fix "fix SMPL name ordering bug in manual feature", which Bailando's metrics also use
(`manual_new.py`): the first release took them between the wrong SMPL joints (its "hip width",
0.42 m, ran from the left hip to the right knee; its "humerus", from the head to the left shoulder).
"""

from __future__ import annotations

import math

import torch

from deepzoo.data.skeleton import NAMES
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
    standard deviation + 1e-10 (Bailando's `normalize`). A feature that is constant in the
    reference (std 0: a geometric relation that never fires in the ground truth) is only centred:
    Bailando's 1e-10 would turn any deviation there into ~1e10 standard deviations and the FID
    into ~1e20."""
    reference = reference.double()
    mean, std = reference.mean(0), reference.std(0, unbiased=False)
    return (features.double() - mean) / torch.where(std > 0, std + 1e-10, torch.ones_like(std))


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


# ---------------------------------------------------------------- geometric features
_LEFT_SHOULDER = (0.199113488, 0.236807942, -0.0180702247)
_RIGHT_SHOULDER = (-0.191692337, 0.236928746, -0.0123055102)
_LEFT_ELBOW = (0.454445392, 0.221158922, -0.0410167128)
_LEFT_HIP = (0.0564076714, -0.323069185, 0.0109197125)
_RIGHT_HIP = (-0.0624834076, -0.331302464, 0.0150412619)
"""SMPL rest-pose joints (metres) from which AIST++ measures its body lengths."""
HUMERUS = math.dist(_LEFT_SHOULDER, _LEFT_ELBOW)
"""hl, left shoulder to left elbow: 0.2568 m."""
SHOULDER_WIDTH = math.dist(_LEFT_SHOULDER, _RIGHT_SHOULDER)
"""sw: 0.3908 m."""
HIP_WIDTH = math.dist(_LEFT_HIP, _RIGHT_HIP)
"""hw: 0.1192 m."""
_ALIAS = {
    "root": "pelvis", "lhip": "left_hip", "rhip": "right_hip", "belly": "spine1", "lknee": "left_knee",
    "rknee": "right_knee", "spine": "spine2", "lankle": "left_ankle", "rankle": "right_ankle",
    "chest": "spine3", "ltoes": "left_foot", "rtoes": "right_foot", "neck": "neck",
    "lshoulder": "left_shoulder", "rshoulder": "right_shoulder", "lelbow": "left_elbow",
    "relbow": "right_elbow", "lwrist": "left_wrist", "rwrist": "right_wrist",
}  # fmt: skip
_MOVE_TIME = 1.0 / 120.0
"""The time per frame AIST++'s velocity relations divide by (its default, kept for comparability)."""


class _Frames:
    """Positions of named joints and AIST++'s virtual points in frames 1..T-1 (`now`) and
    0..T-2 (`before`), each (T - 1, 3)."""

    def __init__(self, joints: torch.Tensor) -> None:
        self.joints = joints.double()
        n = len(joints) - 1
        zero = torch.zeros(n, 3, dtype=torch.float64)
        unit = zero.clone()
        unit[:, 1] = 1.0
        floor = zero.clone()
        floor[:, 1] = self.joints[1:, :, 1].min(dim=1).values
        self.virtual = {"zero": zero, "y_unit": unit, "minus_y_unit": -unit, "y_min": floor}

    def now(self, name: str) -> torch.Tensor:
        if name in self.virtual:
            return self.virtual[name]
        return self.joints[1:, NAMES.index(_ALIAS[name])]

    def before(self, name: str) -> torch.Tensor:
        return self.joints[:-1, NAMES.index(_ALIAS[name])]


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(-1)


def geometric_features(joints: torch.Tensor) -> torch.Tensor:
    """joints (T, 24, 3), T >= 2, y up -> (32,) float64: the share of frames 1..T-1 in which each
    of AIST++'s 32 geometric relations holds (module docstring)."""
    if joints.ndim != 3 or joints.shape[1:] != (24, 3) or len(joints) < 2:
        raise ValueError(f"need joint positions (T >= 2, 24, 3), got {tuple(joints.shape)}")
    f = _Frames(joints)
    hl, sw, hw = HUMERUS, SHOULDER_WIDTH, HIP_WIDTH

    def move(j1, j2, j3, j4, threshold):  # velocity of j3 relative to j1, along j1 -> j2
        velocity = (f.now(j3) - f.now(j1)) - (f.before(j3) - f.before(j1))
        direction = f.now(j2) - f.now(j1)
        return _dot(velocity, direction) / direction.norm(dim=-1) / _MOVE_TIME > threshold

    def nmove(j1, j2, j3, j4, threshold):  # velocity of j4 relative to j1, along the plane's normal
        velocity = (f.now(j4) - f.now(j1)) - (f.before(j4) - f.before(j1))
        normal = torch.linalg.cross(f.now(j3) - f.now(j1), f.now(j2) - f.now(j1))
        return _dot(velocity, normal) / normal.norm(dim=-1) / _MOVE_TIME > threshold

    def plane(j1, j2, j3, j4, threshold):  # j4 beyond the plane through j1, j2, j3
        normal = torch.linalg.cross(f.now(j3) - f.now(j1), f.now(j2) - f.now(j1))
        return _dot(normal, f.now(j4) - f.now(j1)) / normal.norm(dim=-1) > threshold

    def nplane(j1, j2, j3, j4, threshold):  # j4 beyond the plane through j3 with normal j1 -> j2
        normal = f.now(j2) - f.now(j1)
        return _dot(normal, f.now(j4) - f.now(j3)) / normal.norm(dim=-1) > threshold

    def angle(j1, j2, j3, j4, low, high):  # angle between j1 -> j2 and j3 -> j4 in (low, high) degrees
        a, b = f.now(j2) - f.now(j1), f.now(j4) - f.now(j3)
        cosine = _dot(a, b) / (a.norm(dim=-1) * b.norm(dim=-1))
        degrees = torch.rad2deg(torch.arccos(cosine))
        return (degrees > low) & (degrees < high)

    def fast(j, threshold):
        return (f.now(j) - f.before(j)).norm(dim=-1) / _MOVE_TIME > threshold

    relations = [
        nmove("neck", "rhip", "lhip", "rwrist", 1.8 * hl),
        nmove("neck", "lhip", "rhip", "lwrist", 1.8 * hl),
        nplane("chest", "neck", "neck", "rwrist", 0.2 * hl),
        nplane("chest", "neck", "neck", "lwrist", 0.2 * hl),
        move("belly", "chest", "chest", "rwrist", 1.8 * hl),
        move("belly", "chest", "chest", "lwrist", 1.8 * hl),
        angle("relbow", "rshoulder", "relbow", "rwrist", 0, 110),
        angle("lelbow", "lshoulder", "lelbow", "lwrist", 0, 110),
        nplane("lshoulder", "rshoulder", "lwrist", "rwrist", 2.5 * sw),
        move("lwrist", "rwrist", "rwrist", "lwrist", 1.4 * hl),
        move("rwrist", "root", "lwrist", "root", 1.4 * hl),
        move("lwrist", "root", "rwrist", "root", 1.4 * hl),
        fast("rwrist", 2.5 * hl),
        fast("lwrist", 2.5 * hl),
        plane("root", "lhip", "ltoes", "rankle", 0.38 * hl),
        plane("root", "rhip", "rtoes", "lankle", 0.38 * hl),
        nplane("zero", "y_unit", "y_min", "rankle", 1.2 * hl),
        nplane("zero", "y_unit", "y_min", "lankle", 1.2 * hl),
        nplane("lhip", "rhip", "lankle", "rankle", 2.1 * hw),
        angle("rknee", "rhip", "rknee", "rankle", 0, 110),
        angle("lknee", "lhip", "lknee", "lankle", 0, 110),
        fast("rankle", 2.5 * hl),
        fast("lankle", 2.5 * hl),
        angle("neck", "root", "rshoulder", "relbow", 25, 180),
        angle("neck", "root", "lshoulder", "lelbow", 25, 180),
        angle("neck", "root", "rhip", "rknee", 50, 180),
        angle("neck", "root", "lhip", "lknee", 50, 180),
        plane("rankle", "neck", "lankle", "root", 0.5 * hl),
        angle("neck", "root", "zero", "y_unit", 70, 110),
        nplane("zero", "minus_y_unit", "y_min", "rwrist", -1.2 * hl),
        nplane("zero", "minus_y_unit", "y_min", "lwrist", -1.2 * hl),
        fast("root", 2.3 * hl),
    ]
    return torch.stack(relations, dim=1).double().mean(0)
