"""Forward kinematics on the SMPL tree against independent computations."""

import pytest
import torch

from deepzoo.data.skeleton import JOINTS, PARENTS, REST_OFFSETS, axis_angle_to_matrix, forward_kinematics


def _skew(v):
    x, y, z = v.unbind(-1)
    zero = torch.zeros_like(x)
    return torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).view(*v.shape[:-1], 3, 3)


@pytest.mark.parametrize("scale", [1e-9, 1e-5, 0.3, 3.0])
def test_rodrigues_equals_the_matrix_exponential_of_the_cross_product_matrix(scale):
    v = scale * torch.randn(64, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    rotation = axis_angle_to_matrix(v)
    torch.testing.assert_close(rotation, torch.linalg.matrix_exp(_skew(v)), rtol=0, atol=1e-12)
    eye = torch.eye(3, dtype=torch.float64).expand(64, 3, 3)
    torch.testing.assert_close(rotation @ rotation.mT, eye, rtol=0, atol=1e-12)


def test_rest_pose_places_each_joint_at_its_parents_plus_its_offset():
    trans = torch.tensor([0.5, 1.0, -2.0])
    motion = torch.cat([torch.zeros(72), trans])
    joints = forward_kinematics(motion)
    expected = [trans]
    for j in range(1, JOINTS):
        expected.append(expected[PARENTS[j]] + REST_OFFSETS[j])
    torch.testing.assert_close(joints, torch.stack(expected))


def test_posed_skeleton_keeps_bone_lengths_and_turns_rigidly_with_its_root():
    generator = torch.Generator().manual_seed(1)
    motion = torch.randn(10, 75, dtype=torch.float64, generator=generator)
    joints = forward_kinematics(motion)  # (10, 24, 3)
    bones = torch.stack([joints[:, j] - joints[:, PARENTS[j]] for j in range(1, JOINTS)], 1).norm(dim=-1)
    torch.testing.assert_close(bones, REST_OFFSETS[1:].double().norm(dim=-1).expand(10, -1))
    turn = torch.tensor([0.0, 0.7, 0.0], dtype=torch.float64)
    turned = motion.clone()
    turned[:, :3] = 0.0  # compose a yaw with a zero root rotation: the root's axis-angle is the yaw
    turned_joints = forward_kinematics(torch.cat([turn.expand(10, 3), turned[:, 3:]], 1))
    rest_root = forward_kinematics(turned)
    rotation = axis_angle_to_matrix(turn)
    trans = motion[:, None, 72:]
    torch.testing.assert_close(turned_joints - trans, (rest_root - trans) @ rotation.T)


def test_wrong_width_is_refused():
    with pytest.raises(ValueError, match="75 values"):
        forward_kinematics(torch.zeros(3, 72))
