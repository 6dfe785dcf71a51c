"""Dance metrics against literal loop implementations of their definitions, and known cases."""

import math

import pytest
import torch

from deepzoo.metrics.dance import diversity, feature_fid, foot_skating, kinetic_features, relative_to_start


def _loop_kinetic(p, dt=1 / 60, w=2):
    """fairmotion's KineticFeatures, frame by frame, with its validity conditions (y up)."""
    T, J, _ = p.shape
    out = []
    for joint in range(J):
        kh = kv = ee = 0.0
        for i in range(1, T):
            v, n = torch.zeros(3, dtype=torch.float64), 0
            for j in range(-w, w + 1):
                if i + j - 1 < 0 or i + j >= T:
                    continue
                v += p[i + j, joint] - p[i + j - 1, joint]
                n += 1
            v = v / (n * dt)
            kh += float(v[0] ** 2 + v[2] ** 2)
            kv += float(v[1] ** 2)
            a, m = torch.zeros(3, dtype=torch.float64), 0
            for j in range(-w, w + 1):
                if i + j - 1 < 0 or i + j + 1 >= T:
                    continue
                v2 = (p[i + j + 1, joint] - p[i + j, joint]) / dt
                v1 = (p[i + j, joint] - p[i + j - 1, joint]) / dt
                a += (v2 - v1) / dt
                m += 1
            ee += float((a / m).norm())
        out += [kh / (T - 1), kv / (T - 1), ee / (T - 1)]
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("T", [3, 4, 7, 30])
def test_kinetic_features_equal_the_frame_by_frame_definition(T):
    p = torch.randn(T, 4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(T)) * 0.1
    torch.testing.assert_close(kinetic_features(p), _loop_kinetic(p))


def test_kinetic_features_need_three_frames_of_joint_positions():
    kinetic_features(torch.zeros(3, 24, 3))  # one second difference: enough
    for shape in [(2, 24, 3), (10, 72), (10, 24, 2)]:
        with pytest.raises(ValueError, match="T >= 3"):
            kinetic_features(torch.zeros(shape))


def test_kinetic_energy_of_a_uniform_motion():
    """A body sliding at 1 m/s along x has horizontal energy 1, vertical 0, expenditure 0."""
    t = torch.arange(61, dtype=torch.float64) / 60
    p = torch.zeros(61, 2, 3, dtype=torch.float64)
    p[:, :, 0] = t[:, None]
    f = kinetic_features(p).view(2, 3)
    torch.testing.assert_close(f, torch.tensor([[1.0, 0.0, 0.0]] * 2, dtype=torch.float64))


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_a_shift():
    f = torch.randn(200, 6, generator=torch.Generator().manual_seed(0)).exp()
    assert feature_fid(f, f) == pytest.approx(0.0, abs=1e-8)
    shifted = f + f.std(0, unbiased=False)  # one ground-truth standard deviation on every feature
    assert feature_fid(shifted, f) == pytest.approx(6.0, rel=1e-6)  # ||mu||^2 = 6 x 1^2, same covariance


def test_diversity_is_the_mean_pairwise_distance():
    f = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 8.0]])
    assert diversity(f) == pytest.approx((5 + 8 + 5) / 3)
    with pytest.raises(ValueError):
        diversity(f[:1])
    # with a reference, the features are first standardized by its per-feature mean and std:
    # scaling both sets alike leaves it unchanged, where the raw distances scale (rel 1e-9: the
    # 1e-10 added to each std, as Bailando's)
    reference = torch.tensor([[1.0, 0.0], [3.0, 4.0], [2.0, 2.0], [0.0, 6.0]], dtype=torch.float64)
    mean, std = reference.mean(0), reference.std(0, unbiased=False)
    assert diversity(f, reference) == pytest.approx(diversity((f.double() - mean) / std), rel=1e-9)
    assert diversity(10 * f, 10 * reference) == pytest.approx(diversity(f, reference), rel=1e-9)
    assert diversity(10 * f) == pytest.approx(10 * diversity(f), rel=1e-6)


def test_foot_skating_is_the_horizontal_speed_of_planted_feet():
    T = 61
    joints = torch.zeros(T, 24, 3)
    joints[:, 10, 0] = torch.arange(T) / 60 * 0.5  # left foot slides at 0.5 m/s on the ground
    joints[:, 11, 1] = 0.3  # right foot in the air, moving fast
    joints[:, 11, 2] = torch.arange(T) / 60 * 4.0
    assert foot_skating(joints) == pytest.approx(0.5, rel=1e-6)
    # the ground is the lowest height a foot reaches, wherever the floor is
    assert foot_skating(joints + torch.tensor([0.0, 1.0, 0.0])) == pytest.approx(0.5, rel=1e-6)
    joints[:, 10, 0] = 0.0
    assert foot_skating(joints) == pytest.approx(0.0, abs=1e-9)
    # a step that leaves the ground is not skating: only steps with the foot down at both ends count
    joints[30:, 10, 1] = 0.5
    joints[30:, 10, 0] = 1.0  # moved 1 m forward while lifting off
    assert foot_skating(joints) == pytest.approx(0.0, abs=1e-9)
    landing = joints.flip(0)  # in the air first, then 1 m back while landing
    assert foot_skating(landing) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="T >= 2"):
        foot_skating(joints[:1])


def test_foot_skating_counts_horizontal_speed_up_to_the_contact_height_inclusive():
    """A foot sliding at 0.5 m/s while it bobs between the ground and exactly contact_height
    (0.25, 0.5 and 0 are exact in binary) skates at 0.5 m/s: its vertical motion is not skating."""
    T = 61
    joints = torch.zeros(T, 24, 3, dtype=torch.float64)
    joints[:, 10, 0] = torch.arange(T, dtype=torch.float64) / 60 * 0.5
    joints[1::2, 10, 1] = 0.25  # odd frames at the top of the contact band
    joints[:, 11, 1] = 0.5  # the other foot never comes down
    assert foot_skating(joints, contact_height=0.25) == pytest.approx(0.5, rel=1e-9)
    assert foot_skating(joints, contact_height=0.125) == 0.0  # every step touches 0.25: none in contact


def test_positions_are_taken_relative_to_the_first_root():
    p = torch.randn(5, 24, 3)
    r = relative_to_start(p)
    assert torch.equal(r[0, 0], torch.zeros(3))
    torch.testing.assert_close(r[0, 5], p[0, 5] - p[0, 0], rtol=0, atol=1e-6)  # the root's, not each joint's
    torch.testing.assert_close(r[3] - r[2], p[3] - p[2], rtol=0, atol=1e-6)  # float32 rounding of p - c
    assert not math.isnan(float(r.sum()))


def _pose_sequence(frames: int, **values) -> torch.Tensor:
    """(frames, 75) SMPL motion at rest except the given {index: value per frame} entries."""
    motion = torch.zeros(frames, 75, dtype=torch.float64)
    for index, value in values.items():
        motion[:, int(index[1:])] = value
    return motion


def test_geometric_features_of_a_body_standing_still():
    from deepzoo.data.skeleton import forward_kinematics
    from deepzoo.metrics.dance import geometric_features

    f = geometric_features(forward_kinematics(_pose_sequence(10)))
    assert f.shape == (32,) and ((f == 0) | (f == 1)).all()
    fast_or_moving = [0, 1, 4, 5, 9, 10, 11, 12, 13, 21, 22, 31]
    assert (f[fast_or_moving] == 0).all()  # nothing moves
    assert f[6] == 0 and f[7] == 0  # straight elbows: 180 degrees, outside (0, 110)
    assert f[28] == 0  # upright: root - neck is 180 degrees from +y, not within (70, 110) (lying)


def test_geometric_features_see_a_bent_elbow_a_lying_body_and_a_fast_root():
    import math

    from deepzoo.data.skeleton import forward_kinematics
    from deepzoo.metrics.dance import geometric_features

    bent = geometric_features(
        forward_kinematics(_pose_sequence(10, j58=math.pi / 2))
    )  # right elbow (19), about y
    assert bent[6] == 1 and bent[7] == 0
    raised = geometric_features(forward_kinematics(_pose_sequence(10, j53=-math.pi / 2)))  # right arm up
    assert raised[2] == 1 and raised[3] == 0 and bent[2] == 0  # wrist above the neck (plane test)
    lying = geometric_features(forward_kinematics(_pose_sequence(10, j0=math.pi / 2)))  # root about x
    assert lying[28] == 1
    sliding = _pose_sequence(10)
    sliding[:, 72] = torch.arange(10) * 0.1  # 0.1 m per frame = 12 m per AIST++ time unit of 1/120 s
    f = geometric_features(forward_kinematics(sliding))
    assert f[31] == 1 and f[12] == 1 and f[22] == 1  # root, right wrist, left ankle all "fast"


def test_the_angle_relations_are_open_intervals_and_need_the_24_smpl_joints():
    """AIST++ tests low < angle < high: a right arm folded so that elbow -> wrist points exactly
    along elbow -> shoulder (cosine exactly 1 in binary: 0 degrees) is outside (0, 110)."""
    from deepzoo.data.skeleton import NAMES
    from deepzoo.metrics.dance import geometric_features

    joints = torch.zeros(4, 24, 3, dtype=torch.float64)
    joints[:, :, 0] = torch.arange(24, dtype=torch.float64)  # distinct joints, no degenerate plane
    elbow, shoulder, wrist = (NAMES.index(n) for n in ("right_elbow", "right_shoulder", "right_wrist"))
    joints[:, elbow] = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    joints[:, shoulder] = torch.tensor([0.0, 1.25, 0.0], dtype=torch.float64)
    joints[:, wrist] = torch.tensor([0.0, 1.5, 0.0], dtype=torch.float64)
    assert geometric_features(joints)[6] == 0
    joints[:, wrist, 0] = 0.5  # now about 63 degrees: inside
    assert geometric_features(joints)[6] == 1
    for shape in [(4, 22, 3), (4, 24, 2), (1, 24, 3)]:
        with pytest.raises(ValueError, match="24, 3"):
            geometric_features(torch.zeros(shape))


def test_a_feature_constant_in_the_ground_truth_is_centred_not_divided_by_zero():
    truth = torch.zeros(50, 2, dtype=torch.float64)
    truth[:, 0] = torch.randn(50, generator=torch.Generator().manual_seed(0))
    ours = truth.clone()
    ours[:, 1] = 0.5  # a relation the ground truth never shows fires half the time
    assert feature_fid(ours, truth) == pytest.approx(0.25, rel=1e-6)  # only the mean shift 0.5^2 remains


# AIST++'s `features/manual.py` after its name-ordering fix: SMPL joint names in SMPL order, the
# 32 relations (kind, joints, threshold in body lengths or a degree range) and its body lengths.
_AIST_NAMES = (
    "root", "lhip", "rhip", "belly", "lknee", "rknee", "spine", "lankle", "rankle", "chest", "ltoes",
    "rtoes", "neck", "linshoulder", "rinshoulder", "head", "lshoulder", "rshoulder", "lelbow",
    "relbow", "lwrist", "rwrist", "lhand", "rhand",
)  # fmt: skip
_AIST_RELATIONS = (
    ("nmove", "neck", "rhip", "lhip", "rwrist", ("hl", 1.8)),
    ("nmove", "neck", "lhip", "rhip", "lwrist", ("hl", 1.8)),
    ("nplane", "chest", "neck", "neck", "rwrist", ("hl", 0.2)),
    ("nplane", "chest", "neck", "neck", "lwrist", ("hl", 0.2)),
    ("move", "belly", "chest", "chest", "rwrist", ("hl", 1.8)),
    ("move", "belly", "chest", "chest", "lwrist", ("hl", 1.8)),
    ("angle", "relbow", "rshoulder", "relbow", "rwrist", (0, 110)),
    ("angle", "lelbow", "lshoulder", "lelbow", "lwrist", (0, 110)),
    ("nplane", "lshoulder", "rshoulder", "lwrist", "rwrist", ("sw", 2.5)),
    ("move", "lwrist", "rwrist", "rwrist", "lwrist", ("hl", 1.4)),
    ("move", "rwrist", "root", "lwrist", "root", ("hl", 1.4)),
    ("move", "lwrist", "root", "rwrist", "root", ("hl", 1.4)),
    ("fast", "rwrist", ("hl", 2.5)),
    ("fast", "lwrist", ("hl", 2.5)),
    ("plane", "root", "lhip", "ltoes", "rankle", ("hl", 0.38)),
    ("plane", "root", "rhip", "rtoes", "lankle", ("hl", 0.38)),
    ("nplane", "zero", "y_unit", "y_min", "rankle", ("hl", 1.2)),
    ("nplane", "zero", "y_unit", "y_min", "lankle", ("hl", 1.2)),
    ("nplane", "lhip", "rhip", "lankle", "rankle", ("hw", 2.1)),
    ("angle", "rknee", "rhip", "rknee", "rankle", (0, 110)),
    ("angle", "lknee", "lhip", "lknee", "lankle", (0, 110)),
    ("fast", "rankle", ("hl", 2.5)),
    ("fast", "lankle", ("hl", 2.5)),
    ("angle", "neck", "root", "rshoulder", "relbow", (25, 180)),
    ("angle", "neck", "root", "lshoulder", "lelbow", (25, 180)),
    ("angle", "neck", "root", "rhip", "rknee", (50, 180)),
    ("angle", "neck", "root", "lhip", "lknee", (50, 180)),
    ("plane", "rankle", "neck", "lankle", "root", ("hl", 0.5)),
    ("angle", "neck", "root", "zero", "y_unit", (70, 110)),
    ("nplane", "zero", "minus_y_unit", "y_min", "rwrist", ("hl", -1.2)),
    ("nplane", "zero", "minus_y_unit", "y_min", "lwrist", ("hl", -1.2)),
    ("fast", "root", ("hl", 2.3)),
)
_AIST_LENGTHS = {"hl": 0.2568381, "sw": 0.3908484, "hw": 0.1192471}  # metres, the fixed release's


def _loop_geometric(p: torch.Tensor) -> torch.Tensor:
    """AIST++'s per-frame relations (its `features/utils.py`), one frame and one relation at a time."""
    per_second = 120.0  # AIST++'s velocity tests divide by 1/120 s per frame

    def at(name, t):
        fixed = {"zero": (0, 0, 0), "y_unit": (0, 1, 0), "minus_y_unit": (0, -1, 0)}
        if name in fixed:
            return torch.tensor(fixed[name], dtype=torch.float64)
        if name == "y_min":
            return torch.tensor([0.0, float(p[t, :, 1].min()), 0.0], dtype=torch.float64)
        return p[t, _AIST_NAMES.index(name)]

    rows = []
    for t in range(1, len(p)):
        row = []
        for kind, *joints, limit in _AIST_RELATIONS:
            now = [at(j, t) for j in joints]
            before = [at(j, t - 1) for j in joints]
            threshold = _AIST_LENGTHS[limit[0]] * limit[1] if isinstance(limit[0], str) else None
            if kind == "fast":
                holds = (now[0] - before[0]).norm() * per_second > threshold
            elif kind == "move":  # velocity of j3 relative to j1, along j1 -> j2
                velocity = (now[2] - now[0]) - (before[2] - before[0])
                direction = now[1] - now[0]
                holds = velocity.dot(direction) / direction.norm() * per_second > threshold
            elif kind == "nmove":  # velocity of j4 relative to j1, along (j3 - j1) x (j2 - j1)
                velocity = (now[3] - now[0]) - (before[3] - before[0])
                normal = torch.linalg.cross(now[2] - now[0], now[1] - now[0])
                holds = velocity.dot(normal) / normal.norm() * per_second > threshold
            elif kind == "plane":  # signed distance of j4 from the plane through j1, j2, j3
                normal = torch.linalg.cross(now[2] - now[0], now[1] - now[0])
                holds = normal.dot(now[3] - now[0]) / normal.norm() > threshold
            elif kind == "nplane":  # signed distance of j4 from the plane through j3, normal j1 -> j2
                normal = now[1] - now[0]
                holds = normal.dot(now[3] - now[2]) / normal.norm() > threshold
            else:  # angle between j1 -> j2 and j3 -> j4, strictly inside the degree range
                a, b = now[1] - now[0], now[3] - now[2]
                degrees = math.degrees(math.acos(float(a.dot(b) / (a.norm() * b.norm()))))
                holds = limit[0] < degrees < limit[1]
            row.append(float(holds))
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64).mean(0)


@pytest.mark.parametrize("seed", [0, 1])
def test_geometric_features_equal_aist_plusplus_frame_by_frame(seed):
    """Pairs of frames, each pair a random pose and a random step from it of a log-uniform size
    (slow to fast steps within a pair, jumps between pairs), so every one of the 32 relations holds
    in some frames, not all, and speeds fall between close thresholds (1.4 and 1.8 humeri). The
    rarest outcome, a shoulder-elbow angle to the spine under 25 degrees (relations 23, 24), has a
    frame probability of about 0.024: 200 pairs miss it with probability 0.976^399 = 6e-5 (60 pairs
    missed it for 27 of 300 seeds, 200 pairs for none)."""
    from deepzoo.data.skeleton import forward_kinematics
    from deepzoo.metrics.dance import geometric_features

    g = torch.Generator().manual_seed(seed)
    pairs = 200
    pose = torch.randn(pairs, 1, 75, generator=g, dtype=torch.float64) * 0.7
    pose[..., 72:] = 0.0
    step = torch.randn(pairs, 1, 75, generator=g, dtype=torch.float64)
    step = step * 10 ** (-3 + 2 * torch.rand(pairs, 1, 1, generator=g, dtype=torch.float64))  # 1e-3..0.1 rad
    step[..., 72:] *= 0.1
    joints = forward_kinematics(torch.cat([pose, pose + step], 1).reshape(2 * pairs, 75))
    expected = _loop_geometric(joints)
    assert ((expected > 0) & (expected < 1)).all()  # no relation is trivially all or nothing here
    torch.testing.assert_close(geometric_features(joints), expected, rtol=0, atol=1e-12)


def test_the_body_lengths_are_those_of_the_smpl_rest_pose():
    """AIST++'s humerus, shoulder and hip widths measured on deepzoo's rest skeleton (its offsets
    are SMPL's rounded to a centimetre, so within 1.5 cm): the first AIST++ release's constants,
    taken between the wrong joints (hip width 0.42 m), fail this."""
    from deepzoo.data.skeleton import NAMES, forward_kinematics
    from deepzoo.metrics.dance import HIP_WIDTH, HUMERUS, SHOULDER_WIDTH

    rest = forward_kinematics(torch.zeros(75, dtype=torch.float64))

    def length(a, b):
        return float((rest[NAMES.index(a)] - rest[NAMES.index(b)]).norm())

    assert HUMERUS == pytest.approx(length("left_shoulder", "left_elbow"), abs=0.015)
    assert SHOULDER_WIDTH == pytest.approx(length("left_shoulder", "right_shoulder"), abs=0.015)
    assert HIP_WIDTH == pytest.approx(length("left_hip", "right_hip"), abs=0.015)
    assert (HUMERUS, SHOULDER_WIDTH, HIP_WIDTH) == pytest.approx(tuple(_AIST_LENGTHS.values()), abs=1e-6)
