"""A loader for the AIST++ dance set (Li et al., 2021), in its published layout:

    <root>/motions/<sequence>.pkl    {"smpl_poses": (N, 72), "smpl_trans": (N, 3),
                                      "smpl_scaling": (1,), "smpl_loss": float}, 60 FPS
    <root>/wav/<music>.wav           the music, e.g. mBR0.wav for gBR_sBM_cAll_d04_mBR0_ch01
    <root>/splits/crossmodal_{train,val,test}.txt, ignore_list.txt   one sequence name per line

A frame of motion is 75 numbers: the 72 SMPL axis-angle pose values and the root translation
divided by the SMPL scaling (Bailando's convention), so translations are in the body's units.
The data set cannot be downloaded here; point `root` at a copy of it (the annotations from
https://google.github.io/aistplusplus_dataset/ and the music from the AIST Dance DB).

The motion files are pickles. Unpickling runs code named in the file, so they are read with a
restricted unpickler that admits numpy arrays, numpy scalars, dicts, lists, tuples, strings and
numbers only (at any protocol: protocols 0-2 store an array's bytes through `_codecs.encode`,
admitted for its latin-1 codec alone); anything else is refused with an error that names the file.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MOTION_DIM = 75
FPS = 60
SPLITS = ("train", "val", "test")

_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),  # protocol 5 (Python 3.14's default)
    ("numpy._core.numeric", "_frombuffer"),
}


def _latin1_bytes(text: str, encoding: str) -> bytes:
    """What `_codecs.encode` does in a protocol 0-2 pickle: the bytes of an array's buffer, stored
    as a latin-1 string; any other codec is refused."""
    if encoding != "latin1":
        raise pickle.UnpicklingError(f"refusing to decode bytes with codec {encoding!r}")
    return text.encode("latin1")


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> type:
        if (module, name) == ("_codecs", "encode"):  # bytes in protocols 0-2 (numpy's buffers)
            return _latin1_bytes
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays and plain data")


def safe_unpickle(path: str | Path) -> object:
    """The object in a pickle file, if it holds nothing but arrays and plain data."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no file at {path}")
    try:
        return _ArraysOnly(io.BytesIO(path.read_bytes())).load()
    except pickle.UnpicklingError as error:
        raise pickle.UnpicklingError(f"{path}: {error}") from None
    except (EOFError, ValueError, TypeError, IndexError) as error:
        raise ValueError(f"{path} is not a readable pickle: {error}") from None


def read_motion(path: str | Path) -> np.ndarray:
    """(N, 75) float32 motion of one AIST++ motion file: poses, then translation / scaling."""
    record = safe_unpickle(path)
    if not isinstance(record, dict):
        raise ValueError(f"{path}: expected a dict of arrays, got {type(record).__name__}")
    missing = {"smpl_poses", "smpl_trans", "smpl_scaling"} - record.keys()
    if missing:
        raise ValueError(f"{path}: missing {sorted(missing)}")
    poses = np.asarray(record["smpl_poses"], dtype=np.float32)
    trans = np.asarray(record["smpl_trans"], dtype=np.float32)
    scaling = np.asarray(record["smpl_scaling"], dtype=np.float32).reshape(-1)
    if poses.ndim != 2 or poses.shape[1] != 72 or trans.shape != (len(poses), 3) or scaling.shape != (1,):
        raise ValueError(
            f"{path}: need smpl_poses (N, 72), smpl_trans (N, 3), smpl_scaling (1,); got "
            f"{poses.shape}, {trans.shape}, {scaling.shape}"
        )
    if not (np.isfinite(poses).all() and np.isfinite(trans).all() and scaling[0] > 0):
        raise ValueError(f"{path}: non-finite values or a non-positive scaling")
    return np.concatenate([poses, trans / scaling[0]], axis=1)


def music_id(sequence: str) -> str:
    """The music of a sequence name: gBR_sBM_cAll_d04_mBR0_ch01 -> mBR0."""
    parts = [p for p in sequence.split("_") if p.startswith("m") and len(p) == 4]
    if len(parts) != 1:
        raise ValueError(f"cannot find the music id (mXX0-9) in sequence name {sequence!r}")
    return parts[0]


def split_names(root: str | Path, split: str) -> list[str]:
    """Sequence names of a cross-modal split, without those in ignore_list.txt."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    splits = Path(root) / "splits"
    path = splits / f"crossmodal_{split}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"no split list at {path}: is {root} an AIST++ root?")
    ignore = splits / "ignore_list.txt"
    ignored = set(ignore.read_text().split()) if ignore.is_file() else set()
    return [name for name in path.read_text().split() if name not in ignored]


@dataclass(frozen=True)
class DanceClip:
    name: str
    motion: np.ndarray
    """(N, 75) float32 at 60 FPS."""
    music: np.ndarray | None
    """(N, 438) float32 music features of the same frames, or None when not asked for."""


def load_aist(root: str | Path, split: str, with_music: bool = True) -> list[DanceClip]:
    """Every sequence of a split with its motion and (optionally) its music features, the two cut
    to the shorter of their lengths (the music runs a frame longer, or more, than the dance)."""
    from deepzoo.data.music import cached_music_features

    root, features, clips = Path(root), {}, []
    for name in split_names(root, split):
        motion = read_motion(root / "motions" / f"{name}.pkl")
        music = None
        if with_music:
            song = music_id(name)  # many dances share one song: extract it once
            if song not in features:
                features[song] = cached_music_features(root / "wav" / f"{song}.wav")
            music = features[song]
            frames = min(len(motion), len(music))
            motion, music = motion[:frames], music[:frames]
        clips.append(DanceClip(name, motion, music))
    return clips


def aist_windows(root: str | Path, split: str, frames: int) -> dict[str, np.ndarray]:
    """A split cut into windows for training and evaluation: every sequence's consecutive,
    non-overlapping windows of `frames` frames (a shorter tail is dropped). Returns "motion"
    (N, frames, 75) float32, "music" (N, frames, 438) float32 and "beats" (N, frames) bool, the
    music's beat frames (the feature's beat one-hot, data/music.py column 53)."""
    from deepzoo.data.music import COLUMNS

    motion, music = [], []
    for clip in load_aist(root, split):
        for start in range(0, len(clip.motion) - frames + 1, frames):
            motion.append(clip.motion[start : start + frames])
            music.append(clip.music[start : start + frames])
    if not motion:
        raise ValueError(f"no sequence of the {split} split of {root} has {frames} frames")
    music_array = np.stack(music).astype(np.float32)
    return {
        "motion": np.stack(motion).astype(np.float32),
        "music": music_array,
        "beats": music_array[..., COLUMNS["beat"]] > 0.5,
    }
