"""Synthetic streams and the per-frame feature loader (data/streams.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepzoo.data.streams import (
    StreamConfig,
    chunk_streams,
    digit_frame_streams,
    load_feature_streams,
    pack_streams,
    stream_grammar,
    stream_layout,
    stream_primitives,
    synthetic_streams,
)


def test_streams_are_deterministic_per_seed():
    a, b, c = (synthetic_streams(3, 200, seed) for seed in (0, 0, 1))
    assert torch.equal(a.tensors["x"], b.tensors["x"]) and torch.equal(
        a.tensors["target"], b.tensors["target"]
    )
    assert not torch.equal(a.tensors["target"], c.tensors["target"])


def test_labels_and_features_match_the_construction():
    config = StreamConfig()
    prototypes, sequences = stream_grammar(config)
    data = synthetic_streams(4, 600, 7, config)
    generator = torch.Generator().manual_seed(7)
    layouts = [stream_layout(600, config, generator) for _ in range(4)]
    shown = stream_primitives(4, 600, 7, config)
    assert torch.equal(shown, torch.stack([layout.primitive for layout in layouts]))
    residuals = []
    for layout, x, target in zip(layouts, data.tensors["x"], data.tensors["target"]):
        # one-hot rows, the layout's labels
        assert torch.equal(target.sum(-1), torch.ones(600)) and torch.equal(target.argmax(-1), layout.label)
        painted = torch.zeros(600, dtype=torch.long)
        for start, end, k in layout.actions:
            painted[max(start, 0) : end] = k
            if start >= 0 and end <= 600:  # whole actions show their class's primitives in order
                shown = layout.primitive[start:end].unique_consecutive()
                assert torch.equal(shown, sequences[k - 1])
        assert torch.equal(painted, layout.label)
        means = torch.cat([prototypes, torch.zeros(1, config.dim)])[layout.primitive]
        residuals.append(x - means)
    # the features are the primitive's prototype plus N(0, noise^2) noise: the residual variance
    # over n = 4 * 600 * 32 values is within 5 standard errors (sqrt(2 / n)) of noise^2
    residual = torch.cat(residuals)
    n = residual.numel()
    assert abs(residual.var().item() / config.noise**2 - 1) < 5 * (2 / n) ** 0.5
    assert abs(residual.mean().item()) < 5 * config.noise / n**0.5


def test_every_primitive_is_shared_so_one_frame_cannot_name_the_action():
    """Also where the slots are tight (5 actions x 3 steps for 6 primitives, where a first draw
    failed to share them all for 27 of grammar seeds 0-29): the grammar is redrawn.
    Prototypes have norm `signal`."""
    for config in [StreamConfig()] + [
        StreamConfig(actions=5, primitives=6, steps=3, grammar_seed=s) for s in range(5)
    ]:
        prototypes, sequences = stream_grammar(config)
        for v in range(config.primitives):
            assert ((sequences == v).any(1)).sum() >= 2
        assert len({tuple(s) for s in sequences.tolist()}) == len(sequences)
        assert (sequences[:, 1:] != sequences[:, :-1]).all()
        torch.testing.assert_close(prototypes.norm(dim=1), torch.full((config.primitives,), config.signal))
    prototypes, _ = stream_grammar(StreamConfig(signal=2.5))
    torch.testing.assert_close(prototypes.norm(dim=1), torch.full((6,), 2.5))


def test_the_grammar_is_drawn_once_per_config_and_handed_out_as_copies():
    """Layouts read one remembered grammar; a caller that edits its copy changes nothing else."""
    config = StreamConfig(grammar_seed=99)
    prototypes, sequences = stream_grammar(config)
    layout = stream_layout(300, config, torch.Generator().manual_seed(0))
    prototypes.zero_()
    sequences.fill_(0)
    again_prototypes, again_sequences = stream_grammar(config)
    assert again_prototypes.abs().sum() > 0 and len(again_sequences.unique()) > 1
    assert torch.equal(
        stream_layout(300, config, torch.Generator().manual_seed(0)).primitive, layout.primitive
    )
    assert not torch.equal(stream_grammar(StreamConfig(grammar_seed=98))[1], again_sequences)


def test_background_gaps_hold_distractors_and_actions_are_separated():
    config = StreamConfig(distractor=1.0)
    layout = stream_layout(2000, config, torch.Generator().manual_seed(0))
    background = layout.label == 0
    assert (layout.primitive[background] >= 0).any()  # primitives shown outside any action
    starts = [s for s, _, _ in layout.actions]
    ends = [e for _, e, _ in layout.actions]
    gaps = [s - e for s, e in zip(starts[1:], ends[:-1])]
    assert min(gaps) >= config.min_gap and max(gaps) <= config.max_gap


def test_a_stream_is_cut_from_an_endless_sequence_at_a_random_offset():
    """Over 100 streams of 300 frames: the offset (uniform in [0, max_gap)) makes some streams
    start inside an action (its start < 0) and others inside a gap; every listed action overlaps
    the stream; every class occurs; a distractor sits anywhere in its gap, not only at its start."""
    config = StreamConfig(distractor=1.0)
    first_starts, classes, distractor_delays = [], set(), []
    for seed in range(100):
        layout = stream_layout(300, config, torch.Generator().manual_seed(seed))
        first_starts.append(layout.actions[0][0])
        classes |= {k for _, _, k in layout.actions}
        assert all(start < 300 and end > 0 for start, end, _ in layout.actions)
        for (_, end, _), (start, _, _) in zip(layout.actions, layout.actions[1:]):
            shown = torch.nonzero(layout.primitive[end:start] >= 0).view(-1)
            distractor_delays.append(int(shown[0]))
    assert min(first_starts) < 0 and max(first_starts) >= config.min_gap
    assert classes == set(range(1, config.actions + 1))
    assert min(distractor_delays) == 0 and max(distractor_delays) > config.min_gap


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="distinct"):
        StreamConfig(actions=10, primitives=2, steps=2)
    with pytest.raises(ValueError, match="hold"):
        StreamConfig(min_hold=3, max_hold=2)
    for field, value, message in [  # the ranges of the annotations, checked when built from Python too
        ("primitives", 1, "primitives must be >= 2, got 1"),
        ("distractor", 1.5, r"distractor must be in \[0, 1\], got 1.5"),
        ("grammar_seed", -1, "grammar-seed must be >= 0, got -1"),
        ("min_gap", 0, "min-gap must be >= 1, got 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            StreamConfig(**{field: value})


def test_chunks_cut_streams_in_order_and_pad_the_last_with_unscored_frames():
    data = synthetic_streams(2, 50, 0)
    chunks = chunk_streams(data, 16)
    assert len(chunks) == 2 * 4
    assert torch.equal(chunks.tensors["x"][1], data.tensors["x"][0, 16:32])
    assert torch.equal(chunks.tensors["x"][4], data.tensors["x"][1, :16])
    last = chunks.tensors["target"][3]
    assert torch.equal(last[:2], data.tensors["target"][0, 48:]) and last[2:].sum() == 0


def write_video(root, video, features, target):
    for name, array in features.items():
        (root / name).mkdir(exist_ok=True)
        np.save(root / name / f"{video}.npy", array)
    (root / "target").mkdir(exist_ok=True)
    np.save(root / "target" / f"{video}.npy", target)


def test_feature_files_load_in_the_thumos_layout(tmp_path):
    rng = np.random.default_rng(0)
    lengths = {"video_a": 7, "video_b": 4}
    for video, T in lengths.items():
        target = np.eye(4)[rng.integers(0, 3, T)]
        target[1] = 0
        target[1, [0, 3]] = 1  # ambiguous frame (THUMOS'14's class 21; here column 3)
        target[2, [1, 2]] = 1  # a frame of two classes
        features = {"rgb": rng.normal(size=(T, 5)), "flow": rng.normal(size=(T, 3))}
        write_video(tmp_path, video, features, target)
    streams = load_feature_streams(tmp_path, list(lengths), ("rgb", "flow"), ambiguous=3)
    for stream, video in zip(streams, lengths):
        rgb = np.load(tmp_path / "rgb" / f"{video}.npy")
        flow = np.load(tmp_path / "flow" / f"{video}.npy")
        target = np.load(tmp_path / "target" / f"{video}.npy")
        assert np.allclose(stream["x"].numpy(), np.concatenate([rgb, flow], 1).astype(np.float32))
        assert stream["target"].shape == (lengths[video], 3)
        assert stream["target"][1].sum() == 0  # the ambiguous frame is not scored
        assert stream["target"][2].tolist() == target[2, :3].tolist()
    packed = pack_streams(streams)
    assert packed.tensors["x"].shape == (2, 7, 8) and packed.tensors["target"][1, 4:].sum() == 0
    middle = load_feature_streams(tmp_path, ["video_a"], ("rgb",), ambiguous=1)[0]["target"]
    target = torch.from_numpy(np.load(tmp_path / "target" / "video_a.npy")).float()
    kept = torch.where(target[:, 1:2] > 0, 0.0, target)[:, [0, 2, 3]]  # column 1 dropped, 2 and 3 kept
    assert torch.equal(middle, kept)


def test_feature_files_that_disagree_or_are_missing_are_named(tmp_path):
    write_video(tmp_path, "v", {"rgb": np.zeros((5, 2))}, np.eye(3)[[0, 1, 2, 0]])
    with pytest.raises(ValueError, match="frame count"):
        load_feature_streams(tmp_path, ["v"], ("rgb",))
    with pytest.raises(FileNotFoundError, match="flow"):
        load_feature_streams(tmp_path, ["v"], ("rgb", "flow"))


def test_digit_frames_show_each_primitive_as_its_digit_and_background_as_clutter():
    config = StreamConfig()
    labels = torch.arange(10).repeat(30)[torch.randperm(300, generator=torch.Generator().manual_seed(0))]
    digits = digit_frame_streams(labels, 3, 400, 5, config)
    # the same layouts as the feature streams of the seed
    assert torch.equal(digits.tensors["target"], synthetic_streams(3, 400, 5, config).tensors["target"])
    generator = torch.Generator().manual_seed(5)
    primitive = torch.stack([stream_layout(400, config, generator).primitive for _ in range(3)])
    shown = labels[digits.tensors["image"]]
    assert torch.equal(shown[primitive >= 0], primitive[primitive >= 0])
    clutter = shown[primitive < 0]
    assert (clutter >= config.primitives).all() and len(clutter.unique()) == 10 - config.primitives
    assert len(digits.tensors["image"].unique()) > 250  # fresh instances, not one image per digit
    with pytest.raises(ValueError, match="no digit 9"):
        digit_frame_streams(labels[labels != 9], 3, 400, 5, config)
