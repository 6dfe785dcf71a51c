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


def _mirror(name: str) -> str:
    """left_x <-> right_x; a joint on the midline is its own mirror."""
    return name.replace("left", "@").replace("right", "left").replace("@", "right")


def test_rest_pose_is_a_t_pose_with_y_up_and_the_bodys_left_at_plus_x():
    """The documented frame of REST_OFFSETS, and SMPL's tree read by joint names: every left joint
    at x > 0 and its mirror at x < 0, chains that stay on their side, the head on top, the feet at
    the bottom, the hands furthest out, each shoulder between its collar's spine joint and the neck."""
    from deepzoo.data.skeleton import NAMES

    joints = dict(zip(NAMES, forward_kinematics(torch.zeros(75))))
    index = {name: j for j, name in enumerate(NAMES)}
    for name, position in joints.items():
        if name.startswith(("left", "right")):
            side = 1 if name.startswith("left") else -1
            assert side * position[0] > 0.03, name
            assert (position - joints[_mirror(name)] * torch.tensor([-1.0, 1.0, 1.0])).norm() < 0.03, name
            parent = NAMES[PARENTS[index[name]]]
            assert parent == _mirror(NAMES[PARENTS[index[_mirror(name)]]])
            assert not parent.startswith("right" if side == 1 else "left"), name
    assert all(PARENTS[j] < j for j in range(1, JOINTS))
    heights = torch.stack([p[1] for p in joints.values()])
    assert NAMES[int(heights.argmax())] == "head"
    assert {NAMES[j] for j in heights.argsort()[:2].tolist()} == {"left_foot", "right_foot"}
    reach = torch.stack([p[0] for p in joints.values()])
    assert (NAMES[int(reach.argmax())], NAMES[int(reach.argmin())]) == ("left_hand", "right_hand")
    for side in ("left", "right"):
        assert joints["spine3"][1] < joints[f"{side}_shoulder"][1] < joints["neck"][1]
        assert joints[f"{side}_hip"][1] < joints["pelvis"][1] < joints["spine1"][1]
        chain = [f"{side}_{part}" for part in ("collar", "shoulder", "elbow", "wrist", "hand")]
        assert [NAMES[PARENTS[index[name]]] for name in chain[1:]] == chain[:-1]
        leg = [f"{side}_{part}" for part in ("hip", "knee", "ankle", "foot")]
        assert [NAMES[PARENTS[index[name]]] for name in leg[1:]] == leg[:-1]
        assert [joints[name][1] for name in leg] == sorted((joints[name][1] for name in leg), reverse=True)
