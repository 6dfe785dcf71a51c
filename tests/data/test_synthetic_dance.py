"""The synthetic music-dance set: deterministic, the dance on the music's beats, the real extractor."""

import numpy as np
import pytest
import torch

from deepzoo.data.music import COLUMNS, FPS, SAMPLE_RATE, music_features
from deepzoo.data.skeleton import forward_kinematics
from deepzoo.data.synthetic_dance import GENRES, keyposes, make_song, synthetic_dance_set
from deepzoo.metrics.retrieval import beat_align_score, kinetic_beats


def test_a_song_is_a_function_of_its_seed():
    a, b, c = make_song(3, 1, 4.0), make_song(3, 1, 4.0), make_song(4, 1, 4.0)
    assert np.array_equal(a.audio, b.audio) and np.array_equal(a.motion, b.motion)
    assert not np.array_equal(a.audio, c.audio) and not np.array_equal(a.motion, c.motion)
    assert a.audio.shape == (4 * SAMPLE_RATE,) and a.motion.shape == (4 * FPS, 75)
    assert np.abs(a.audio).max() <= 1.0


@pytest.mark.parametrize("genre", range(len(GENRES)))
@pytest.mark.parametrize("seed", range(3))
def test_kinetic_beats_fall_on_the_music_beats(genre, seed):
    """Every local minimum of joint speed (Bailando's kinetic beats of the forward-kinematics
    joints) is within 2 frames of a music beat, and the Beat Align Score of the beats at least
    half a second from either end (where a minimum can be found) is at least 0.9."""
    song = make_song(seed, genre, 8.0)
    g = GENRES[genre]
    assert g.tempo[0] <= song.tempo <= g.tempo[1]
    motion_beats = kinetic_beats(forward_kinematics(torch.from_numpy(song.motion).double()))
    music_beats = torch.from_numpy(song.beat_frames)
    gaps = (motion_beats[:, None] - music_beats[None, :]).abs().min(dim=1).values
    assert len(motion_beats) >= 0.8 * len(music_beats) and gaps.max() <= 2
    inner = music_beats[(music_beats >= 30) & (music_beats < len(song.motion) - 30)]
    assert beat_align_score(inner, motion_beats) >= 0.9


def test_each_genre_moves_only_its_own_joints():
    for genre, g in enumerate(GENRES):
        motion = make_song(0, genre, 3.0).motion
        moving = {j for j in range(1, 24) if np.ptp(motion[:, 3 * j : 3 * j + 3], axis=0).max() > 0}
        assert moving == set(g.joints), g.name


def test_the_set_runs_rendered_wavs_through_the_extractor_and_caches(tmp_path):
    dance = synthetic_dance_set(2, 3.0, seed=5, cache=tmp_path / "cache", wav_dir=tmp_path / "wav")
    assert dance.motion.shape == (2, 180, 75) and dance.music.shape == (2, 180, 438)
    assert len(list((tmp_path / "wav").glob("*.wav"))) == 2
    for i in range(2):
        song = make_song(5 * 1_000_003 + i, int(dance.genre[i]), 3.0)
        np.testing.assert_array_equal(dance.motion[i], song.motion)
        assert np.array_equal(np.flatnonzero(dance.beats[i]), song.beat_frames[song.beat_frames < 180])
        # the percussive onset strength peaks on the beats (drums and notes start there), one
        # frame late: it is the rise of the spectrum from the previous frame
        onset = dance.music[i, :, COLUMNS["onset"]]
        near = np.flatnonzero(dance.beats[i])
        near = near[near + 2 < 180]
        peaks = np.maximum.reduce([onset[near], onset[near + 1], onset[near + 2]])
        assert peaks.min() > 0 and peaks.mean() > 5 * onset.mean()
    again = synthetic_dance_set(2, 3.0, seed=5, cache=tmp_path / "cache")
    for name in ("motion", "music", "beats", "genre", "tempo"):
        assert np.array_equal(getattr(again, name), getattr(dance, name))
    assert dance.genre.tolist() == [1, 2]  # song i is GENRES[(i + seed) % 4]
    other = synthetic_dance_set(2, 3.0, seed=6, cache=tmp_path / "cache")  # a set per seed
    assert other.genre.tolist() == [2, 3] and not np.array_equal(other.motion, dance.motion)
    assert len(list((tmp_path / "cache").iterdir())) == 2
    for i, wav in enumerate(sorted((tmp_path / "wav").glob("*.wav"))):  # frame t is the wav's frame t
        np.testing.assert_array_equal(dance.music[i], music_features(wav)[:180])
    short = synthetic_dance_set(1, 1.0, seed=0, cache=tmp_path / "cache")  # a set per length too
    assert short.motion.shape == (1, 60, 75) and len(list((tmp_path / "cache").iterdir())) == 3
    assert np.flatnonzero(short.beats[0]).tolist() == [13, 59]  # a beat on the last frame is kept
    longer = synthetic_dance_set(1, 2.0, seed=0, cache=tmp_path / "cache")
    assert longer.motion.shape == (1, 120, 75) and len(list((tmp_path / "cache").iterdir())) == 4


@pytest.mark.parametrize("genre", range(len(GENRES)))
def test_the_body_holds_the_keypose_of_the_note_the_song_plays_on_each_beat(genre):
    """The pairing the dance is built on: on every beat the harmonic chroma of the rendered song
    names the pitch class of that beat's note (root + scale degree, mod 12; C is chroma 0), the
    moved joints are in that note's keypose (equal on two beats of one note, apart on two notes),
    and no note repeats the one before."""
    from deepzoo.data.music import music_features

    g = GENRES[genre]
    for seed in range(2):
        song = make_song(seed, genre, 6.0)
        chroma = music_features(song.audio)[:, COLUMNS["chroma"]]
        notes = song.notes[1:]  # notes[0] is the pickup beat's, before the song starts
        assert (np.diff(song.notes) != 0).all()
        beats = [(b, n) for b, n in zip(song.beat_frames, notes) if b + 12 <= len(song.motion)]
        for frame, note in beats:
            assert chroma[frame + 2 : frame + 12].mean(0).argmax() == (g.root + g.scale[note]) % 12
        times = song.first_beat + 60 / song.tempo * np.arange(len(notes))
        assert np.abs(song.beat_frames - times * FPS).max() <= 0.5  # the nearest frames
        moved = [3 * j + i for j in g.joints for i in range(3)]
        poses, keys = {}, []
        for frame, note in beats:
            pose = song.motion[frame, moved]
            np.testing.assert_array_equal(poses.setdefault(note, pose), pose)
            keys.append(keyposes(g)[note, moved])
        seen, keys = np.stack([song.motion[frame, moved] for frame, _ in beats]), np.stack(keys)
        scale = (seen * keys).sum() / (keys * keys).sum()  # the genre's keyposes, scaled per song
        np.testing.assert_allclose(seen, scale * keys, rtol=0, atol=1e-5)
        assert 0.8 <= scale <= 1.2 and abs(scale - 1) > 1e-6
        distinct = list(poses.values())
        assert min(np.abs(a - b).max() for i, a in enumerate(distinct) for b in distinct[:i]) > 0.1


def test_the_sway_turns_with_the_roots_yaw():
    """A song's facing is a yaw of the root (axis-angle (0, yaw, 0)) that turns the translation
    with it: in the root's frame every keypose's sway is sideways and down (z = 0, y <= 0)."""
    from deepzoo.data.skeleton import axis_angle_to_matrix

    for seed in range(4):
        motion = torch.from_numpy(make_song(seed, seed % len(GENRES), 3.0).motion).double()
        root = motion[:, :3]
        assert (root[:, [0, 2]] == 0).all() and (root[:, 1] == root[0, 1]).all() and root[0, 1] != 0
        local = (axis_angle_to_matrix(root).mT @ motion[:, 72:, None])[..., 0]
        torch.testing.assert_close(local[:, 2], torch.zeros(len(motion), dtype=torch.float64))
        assert (local[:, 1] <= 0).all() and local[:, 0].abs().max() > 0
