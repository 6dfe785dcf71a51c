"""The AIST++ loader on files written in the data set's exact layout; pickles that hold anything
but arrays and plain data are refused before any of their code runs."""

import codecs
import collections
import os
import pickle

import numpy as np
import pytest

from deepzoo.data.aist import load_aist, music_id, read_motion, safe_unpickle, split_names


def _write_motion(path, frames, seed):
    rng = np.random.default_rng(seed)
    record = {
        "smpl_poses": rng.normal(size=(frames, 72)).astype(np.float32),
        "smpl_trans": rng.normal(size=(frames, 3)) * 90.0,  # float64, as in the release
        "smpl_scaling": np.array([90.0]),
        "smpl_loss": np.float64(0.01),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(record, f)
    return record


def write_aist(root, frames, train=4, test=2):
    """A small AIST++ tree: `train` + `test` random dances of `frames` frames, each on its own
    synthetic song (3 s), with the crossmodal split files."""
    from deepzoo.data.synthetic_dance import make_song, write_wav

    genres = ["BR", "PO", "LO", "MH", "LH", "HO", "WA", "KR", "JS", "JB"]
    names = [f"g{g}_sBM_cAll_d04_m{g}{i}_ch01" for i, g in enumerate(genres[: train + test])]
    (root / "wav").mkdir(parents=True)
    for i, name in enumerate(names):
        _write_motion(root / "motions" / f"{name}.pkl", frames, seed=i)
        write_wav(root / "wav" / f"{music_id(name)}.wav", make_song(seed=i, genre=i % 4, seconds=3.0).audio)
    (root / "splits").mkdir()
    (root / "splits" / "crossmodal_train.txt").write_text("\n".join(names[:train]) + "\n")
    (root / "splits" / "crossmodal_test.txt").write_text("\n".join(names[train:]) + "\n")
    (root / "splits" / "ignore_list.txt").write_text("")
    return root


@pytest.fixture
def aist_root(tmp_path):
    names = ["gBR_sBM_cAll_d04_mBR0_ch01", "gPO_sFM_cAll_d10_mPO1_ch02", "gLH_sBM_cAll_d16_mLH2_ch03"]
    records = {
        name: _write_motion(tmp_path / "motions" / f"{name}.pkl", 30 + 5 * i, i)
        for i, name in enumerate(names)
    }
    splits = tmp_path / "splits"
    splits.mkdir()
    (splits / "crossmodal_train.txt").write_text("\n".join(names) + "\n")
    (splits / "ignore_list.txt").write_text(names[2] + "\n")
    return tmp_path, records


def test_motion_files_round_trip_in_the_published_layout(aist_root):
    root, records = aist_root
    assert split_names(root, "train") == ["gBR_sBM_cAll_d04_mBR0_ch01", "gPO_sFM_cAll_d10_mPO1_ch02"]
    clips = load_aist(root, "train", with_music=False)
    assert [c.name for c in clips] == split_names(root, "train")
    for clip in clips:
        record = records[clip.name]
        assert clip.motion.shape == (len(record["smpl_poses"]), 75) and clip.motion.dtype == np.float32
        np.testing.assert_array_equal(clip.motion[:, :72], record["smpl_poses"])
        np.testing.assert_allclose(clip.motion[:, 72:], record["smpl_trans"] / 90.0, rtol=1e-6)
        assert clip.music is None
    assert music_id("gBR_sBM_cAll_d04_mBR0_ch01") == "mBR0"


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


class _OtherCodec:
    def __reduce__(self):
        return (codecs.encode, ("pwned", "rot13"))


def test_a_pickle_with_code_or_foreign_objects_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"smpl_poses": _Payload()}))
    with pytest.raises(pickle.UnpicklingError, match="posix.system|os.system|nt.system"):
        safe_unpickle(evil)
    assert not (tmp_path / "pwned").exists()
    foreign = tmp_path / "foreign.pkl"
    for value, protocol in (
        (pytest.approx, 5),
        ({1, 2}, 3),
        (collections.OrderedDict(), 5),
    ):  # a set at 3: builtins.set
        foreign.write_bytes(pickle.dumps({"smpl_poses": value}, protocol=protocol))  # each alone
        with pytest.raises(pickle.UnpicklingError, match="foreign.pkl"):
            read_motion(foreign)
    arrays = {"smpl_poses": np.ones((2, 72)), "smpl_trans": np.ones((2, 3)), "smpl_scaling": np.float64(2)}
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):  # arrays and numpy scalars load at any protocol
        foreign.write_bytes(pickle.dumps(arrays, protocol=protocol))
        np.testing.assert_array_equal(read_motion(foreign)[:, 72:], np.full((2, 3), 0.5))
    foreign.write_bytes(pickle.dumps({"smpl_poses": _OtherCodec()}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="codec 'rot13'"):  # _codecs.encode: latin-1 only
        read_motion(foreign)
    # only the named numpy constructors and _codecs.encode: not numpy.load, not another _codecs call
    for module, name in (("numpy", "load"), ("_codecs", "decode")):
        foreign.write_bytes(f"c{module}\n{name}\n(S'x'\nS'latin1'\ntR.".encode())  # protocol 0
        with pytest.raises(pickle.UnpicklingError, match=f"refusing to load {module}.{name}"):
            safe_unpickle(foreign)


def test_missing_or_malformed_files_are_clear_errors(aist_root, tmp_path):
    root, _ = aist_root
    with pytest.raises(FileNotFoundError, match="nope.pkl"):
        read_motion(root / "motions" / "nope.pkl")
    with pytest.raises(FileNotFoundError, match="crossmodal_val"):
        split_names(root, "val")
    with pytest.raises(ValueError, match="split must be"):
        split_names(root, "dev")
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(
        pickle.dumps(
            {"smpl_poses": np.zeros((5, 70)), "smpl_trans": np.zeros((5, 3)), "smpl_scaling": np.ones(1)}
        )
    )
    with pytest.raises(ValueError, match=r"smpl_poses \(N, 72\)"):
        read_motion(bad)
    for poses, trans, scaling in ((np.zeros((5, 72)), np.full((5, 3), np.nan), np.ones(1)),
                                  (np.full((5, 72), np.inf), np.zeros((5, 3)), np.ones(1)),
                                  (np.zeros((5, 72)), np.zeros((5, 3)), np.zeros(1))):  # fmt: skip
        bad.write_bytes(pickle.dumps({"smpl_poses": poses, "smpl_trans": trans, "smpl_scaling": scaling}))
        with pytest.raises(ValueError, match="non-finite values or a non-positive scaling"):
            read_motion(bad)
    bad.write_bytes(pickle.dumps({"smpl_poses": np.zeros((5, 72))}))
    with pytest.raises(ValueError, match="missing"):
        read_motion(bad)
    bad.write_bytes(b"not a pickle at all")
    with pytest.raises((ValueError, pickle.UnpicklingError), match="bad.pkl"):
        read_motion(bad)
    bad.write_bytes(b"\x80\x09.")  # pickle raises ValueError: unsupported protocol 9
    with pytest.raises(ValueError, match="bad.pkl is not a readable pickle: unsupported pickle protocol"):
        read_motion(bad)
    with pytest.raises(ValueError, match="music id"):
        music_id("gBR_sBM_cAll_d04_ch01")


def test_a_split_is_cut_into_windows_with_the_musics_beats(aist_root):
    """aist_windows: consecutive windows of every sequence, motion and music cut alike, the beats
    the music feature's beat one-hot; the dance recipes read them with --data.root."""
    import torch

    from deepzoo.data.aist import aist_windows
    from deepzoo.data.music import COLUMNS, music_features
    from deepzoo.data.synthetic_dance import make_song, write_wav
    from deepzoo.recipes.contrastive import ClipDanceRun, DanceData, dance_splits

    root, records = aist_root
    (root / "wav").mkdir()
    for i, song in enumerate(("mBR0", "mPO1")):
        write_wav(root / "wav" / f"{song}.wav", make_song(seed=i, genre=i, seconds=2.0).audio)
    (root / "splits" / "crossmodal_test.txt").write_text("gPO_sFM_cAll_d10_mPO1_ch02\n")
    windows = aist_windows(root, "train", 12)  # sequences of 30 and 35 frames: 2 + 2 windows
    assert windows["motion"].shape == (4, 12, 75) and windows["music"].shape == (4, 12, 438)
    second = read_motion(root / "motions" / "gPO_sFM_cAll_d10_mPO1_ch02.pkl")
    np.testing.assert_array_equal(windows["motion"][3], second[12:24])
    music = music_features(root / "wav" / "mPO1.wav")
    np.testing.assert_allclose(windows["music"][2], music[:12], rtol=1e-6)
    np.testing.assert_array_equal(windows["beats"][2], music[:12, COLUMNS["beat"]] > 0.5)
    assert windows["beats"][2].any()  # this song has a beat in its first 12 frames
    with pytest.raises(ValueError, match="has 60 frames"):
        aist_windows(root, "train", 60)

    config = ClipDanceRun(data=DanceData(root=str(root), seconds=0.2))  # 12 frames
    train, test = dance_splits(config, torch.device("cpu"))
    assert len(train) == 4 and len(test) == 2 and set(train.tensors) == {"motion", "music", "beats"}


def test_a_dance_longer_than_its_song_is_cut_to_the_song_and_a_window_may_span_it_all(tmp_path):
    """load_aist cuts motion and music to the shorter of the two (here the song: 1 s, 61 frames,
    under a 100-frame dance), and aist_windows keeps a window that ends on the last frame."""
    from deepzoo.data.aist import aist_windows
    from deepzoo.data.music import music_features
    from deepzoo.data.synthetic_dance import make_song, write_wav

    name = "gBR_sBM_cAll_d04_mBR0_ch01"
    record = _write_motion(tmp_path / "motions" / f"{name}.pkl", 100, seed=0)
    (tmp_path / "wav").mkdir()
    write_wav(tmp_path / "wav" / "mBR0.wav", make_song(seed=0, genre=0, seconds=1.0).audio)
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "crossmodal_train.txt").write_text(name + "\n")
    music = music_features(tmp_path / "wav" / "mBR0.wav")
    assert len(music) == 61
    (clip,) = load_aist(tmp_path, "train")
    assert clip.motion.shape == (61, 75) and clip.music.shape == (61, 438)
    np.testing.assert_array_equal(clip.motion[:, :72], record["smpl_poses"][:61])
    windows = aist_windows(tmp_path, "train", 61)
    assert windows["motion"].shape == (1, 61, 75)
    np.testing.assert_allclose(windows["music"][0], music, rtol=1e-6)
    assert len(aist_windows(tmp_path, "train", 30)["motion"]) == 2  # frames 0-29 and 30-59
    with pytest.raises(ValueError, match="music id"):
        music_id("gBR_sBM_cAll_d04_mBR_ch01")  # a music id is m, a genre's two letters, a digit


def test_dances_on_one_song_read_its_music_features_once(tmp_path, monkeypatch):
    """Many AIST++ dances share a song: load_aist extracts each song's features once."""
    from deepzoo.data import music

    names = ["gBR_sBM_cAll_d04_mBR0_ch01", "gBR_sBM_cAll_d05_mBR0_ch02", "gPO_sBM_cAll_d10_mPO1_ch01"]
    for i, name in enumerate(names):
        _write_motion(tmp_path / "motions" / f"{name}.pkl", 20, seed=i)
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "crossmodal_train.txt").write_text("\n".join(names) + "\n")
    read = []
    monkeypatch.setattr(
        music, "cached_music_features", lambda path: read.append(path.name) or np.zeros((30, 438))
    )
    clips = load_aist(tmp_path, "train")
    assert read == ["mBR0.wav", "mPO1.wav"] and [c.music.shape for c in clips] == [(20, 438)] * 3
