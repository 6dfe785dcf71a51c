"""The 438-d per-frame music feature of AIST++ / Bailando, computed with librosa.

Audio is resampled to SAMPLE_RATE = FPS * HOP_LENGTH = 60 * 512 = 30,720 Hz, so one hop of 512
samples is one motion frame at 60 FPS. Per frame, in this order:

    columns   0-19   MFCC (20; librosa.feature.mfcc: log-mel power, DCT-II)
    columns  20-39   MFCC delta (librosa.feature.delta, width 9)
    columns  40-51   constant-Q chroma of the harmonic part (librosa.effects.hpss)
    column      52   onset strength of the percussive part (median over mel bands)
    column      53   beat one-hot (librosa.beat.beat_track on that onset envelope)
    columns 54-437   tempogram (384 lags) of that onset envelope

librosa is the optional `audio` extra (`pip install 'deepzoo[audio]'`); nothing else in deepzoo
needs it.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np

FPS = 60
HOP_LENGTH = 512
SAMPLE_RATE = FPS * HOP_LENGTH
FEATURE_DIM = 438
COLUMNS: dict[str, slice | int] = {
    "mfcc": slice(0, 20),
    "mfcc_delta": slice(20, 40),
    "chroma": slice(40, 52),
    "onset": 52,
    "beat": 53,
    "tempogram": slice(54, 438),
}


def _librosa() -> Any:
    try:
        import librosa
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ImportError("music features need librosa: pip install 'deepzoo[audio]'") from error
    return librosa


def load_audio(path: str | Path) -> np.ndarray:
    """Mono float32 samples of an audio file at SAMPLE_RATE; a clear error if it is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no audio file at {path}")
    samples, _ = _librosa().load(path, sr=SAMPLE_RATE, mono=True)
    return samples


def music_features(audio: np.ndarray | str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(frames, 438) float32 features of mono audio (samples at `sample_rate`, or a file path);
    frames = 1 + len(samples at 30,720 Hz) // 512, i.e. duration x 60 + 1."""
    librosa = _librosa()
    if isinstance(audio, (str, Path)):
        samples = load_audio(audio)
    else:
        samples = np.asarray(audio, dtype=np.float32)
        if samples.ndim != 1:
            raise ValueError(f"need mono samples (N,), got shape {samples.shape}")
        if sample_rate != SAMPLE_RATE:
            samples = librosa.resample(samples, orig_sr=sample_rate, target_sr=SAMPLE_RATE)
    if len(samples) < 2 * HOP_LENGTH:
        raise ValueError(f"audio too short for features: {len(samples)} samples at {SAMPLE_RATE} Hz")
    sr, hop = SAMPLE_RATE, HOP_LENGTH
    mfcc = librosa.feature.mfcc(y=samples, sr=sr, n_mfcc=20, hop_length=hop)
    mfcc_delta = librosa.feature.delta(mfcc)
    harmonic, percussive = librosa.effects.hpss(samples)
    chroma = librosa.feature.chroma_cqt(y=harmonic, sr=sr, hop_length=hop, n_chroma=12)
    onset = librosa.onset.onset_strength(y=percussive, sr=sr, hop_length=hop, aggregate=np.median)
    _, beat_frames = librosa.beat.beat_track(onset_envelope=onset, sr=sr, hop_length=hop)
    beat = np.zeros_like(onset)
    beat[beat_frames] = 1.0
    tempogram = librosa.feature.tempogram(onset_envelope=onset, sr=sr, hop_length=hop)
    frames = min(mfcc.shape[1], chroma.shape[1], len(onset), tempogram.shape[1])
    columns = [mfcc, mfcc_delta, chroma, onset[None], beat[None], tempogram]
    features = np.concatenate([c[:, :frames] for c in columns], axis=0).T
    return features.astype(np.float32)


def cached_music_features(path: str | Path) -> np.ndarray:
    """`music_features` of an audio file, kept on disk in `cache_root()/music-features`: every
    run of a dance recipe, and every `deepzoo sample --wav`, reads the same songs, and their
    features take about a tenth of the song's duration to compute (6 s a minute of music on one
    core of a 2-core EPYC), hashing the file milliseconds. The key is the SHA-1 of the file's
    bytes, this module's source and the versions of librosa, numpy and scipy, so a cached file is
    never stale; an unreadable one is computed again and replaced."""
    from deepzoo.data.root import cache_root
    from deepzoo.files import write_cache

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no audio file at {path}")
    import scipy

    digest = hashlib.sha1(path.read_bytes())
    digest.update(Path(__file__).read_bytes())
    digest.update(str((_librosa().__version__, np.__version__, scipy.__version__)).encode())
    stored = cache_root() / "music-features" / f"{digest.hexdigest()}.npy"
    try:
        features = np.load(stored, allow_pickle=False)
        if features.ndim == 2 and features.shape[1] == FEATURE_DIM and features.dtype == np.float32:
            return features
    except (OSError, ValueError):
        pass
    features = music_features(path)
    buffer = io.BytesIO()
    np.save(buffer, features, allow_pickle=False)
    write_cache(stored, buffer.getvalue())
    return features
