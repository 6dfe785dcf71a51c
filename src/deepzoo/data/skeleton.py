"""Joint positions of SMPL-parameterised motion: forward kinematics on the 24-joint SMPL tree.

A motion frame is 75 numbers (AIST++ / Bailando): 24 axis-angle rotations (72), each joint's
rotation relative to its parent, then the root translation (3). With R_j the rotation matrix of
joint j's axis-angle (Rodrigues' formula) and o_j its rest offset from its parent,

    G_0 = R_0,  p_0 = translation;    G_j = G_parent(j) R_j,  p_j = p_parent(j) + G_parent(j) o_j.

The rest offsets are an approximation of the SMPL neutral body's joint locations (metres, y up,
+x the body's left), rounded to a centimetre: the SMPL model files are licensed and cannot ship
here. Kinetic beats and joint speeds, which is what deepzoo uses positions for, depend on the
motion far more than on these centimetres; for the exact SMPL joints run the SMPL body model.
"""

from __future__ import annotations

import torch

JOINTS = 24
PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)
"""SMPL's kinematic tree: PARENTS[j] is the parent of joint j (the pelvis, 0, is the root)."""
NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
    "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hand", "right_hand",
)  # fmt: skip
REST_OFFSETS = torch.tensor(
    [
        [0.00, 0.00, 0.00], [0.06, -0.09, -0.01], [-0.06, -0.09, -0.01], [0.00, 0.12, -0.03],
        [0.04, -0.38, 0.01], [-0.04, -0.38, 0.00], [0.01, 0.14, 0.03], [-0.01, -0.43, -0.04],
        [0.02, -0.42, -0.04], [0.00, 0.06, 0.00], [0.04, -0.06, 0.12], [-0.04, -0.06, 0.13],
        [-0.01, 0.21, -0.03], [0.07, 0.11, -0.02], [-0.08, 0.11, -0.02], [0.01, 0.09, 0.05],
        [0.12, 0.05, -0.02], [-0.11, 0.05, -0.01], [0.26, -0.02, -0.02], [-0.26, -0.01, -0.03],
        [0.27, 0.01, -0.01], [-0.27, 0.01, -0.01], [0.09, -0.01, -0.02], [-0.09, -0.01, -0.01],
    ]
)  # fmt: skip
"""(24, 3) offset of each joint from its parent in the rest pose (approximate SMPL, metres)."""


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """(..., 3) axis-angle v = theta n -> (..., 3, 3) rotation matrices by Rodrigues' formula,
    R = I + sin(theta) K + (1 - cos(theta)) K^2 with K the cross-product matrix of n; near
    theta = 0 the Taylor forms sin(t)/t ~ 1 - t^2/6 and (1 - cos t)/t^2 ~ 1/2 - t^2/24 keep it exact."""
    theta2 = axis_angle.square().sum(-1, keepdim=True)[..., None]  # (..., 1, 1)
    theta = theta2.clamp_min(1e-12).sqrt()
    small = theta2 < 1e-8
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / theta2.clamp_min(1e-12))
    x, y, z = axis_angle.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).view(*axis_angle.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    return eye + a * k + b * (k @ k)


def forward_kinematics(motion: torch.Tensor, offsets: torch.Tensor = REST_OFFSETS) -> torch.Tensor:
    """(..., 75) motion frames (72 axis-angle values, 3 root translation) -> (..., 24, 3) joint
    positions (see the module docstring)."""
    if motion.shape[-1] != 3 * JOINTS + 3:
        raise ValueError(f"need motion frames of {3 * JOINTS + 3} values, got shape {tuple(motion.shape)}")
    rotations = axis_angle_to_matrix(motion[..., :72].unflatten(-1, (JOINTS, 3)))  # (..., 24, 3, 3)
    offsets = offsets.to(motion)
    frames, positions = [rotations[..., 0, :, :]], [motion[..., 72:]]
    for j in range(1, JOINTS):
        parent = PARENTS[j]
        frames.append(frames[parent] @ rotations[..., j, :, :])
        positions.append(positions[parent] + (frames[parent] @ offsets[j].unsqueeze(-1)).squeeze(-1))
    return torch.stack(positions, dim=-2)
