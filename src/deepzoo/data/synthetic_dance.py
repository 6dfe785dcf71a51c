"""A synthetic music-dance set that trains offline: procedural songs, rendered to wav and run through
the real 438-d extractor (data/music.py), each paired with 75-d SMPL-parameterised motion that
dances to it. Deterministic given a seed.

A song of genre g has a tempo drawn from g's range (beat period P = 60 / BPM seconds), a first
beat b_0 in [0, P), and a melody: one note n_k of g's scale on each beat t_k = b_0 + k P (never
the same note twice in a row), over g's drum pattern (kick, snare, hi-hat on sixteenth steps).

The dance holds one keypose per note of g's scale (72 pose values and 3 translation, over the
joints g moves; drawn once per genre). On beat k the body is exactly in keypose K[n_k], and
between beats it eases to the next with a raised cosine,

    x(t) = K[n_k] + (K[n_{k+1}] - K[n_k]) (1 - cos(pi u)) / 2,    u = (t - t_k) / P in [0, 1),

so every joint's speed, proportional to sin(pi u), is zero on each beat: the kinetic beats (local
minima of joint speed) fall on the music beats. Each dance is scaled by a per-song amplitude and
turned by a per-song facing (root yaw). Which pose follows which is the melody's choice, so the
motion depends on the music beyond its beat, and a stretch of one song looks like no stretch of
another.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepzoo.data.aist import FPS, MOTION_DIM

HOLD = 0.3
"""Fraction of a beat period the body holds each keypose, centred on its beat."""
STEPS_PER_BEAT = 4
"""Drum patterns are on sixteenth notes: four steps per beat, sixteen per 4/4 bar."""


@dataclass(frozen=True)
class Genre:
    name: str
    tempo: tuple[float, float]
    """Beats per minute, drawn uniformly per song."""
    scale: tuple[int, ...]
    """Semitones above the root; one keypose per note."""
    root: int
    """MIDI note of the scale's root."""
    harmonics: tuple[float, ...]
    """Amplitude of harmonic 1, 2, ... of the melody's timbre."""
    kick: tuple[int, ...]
    snare: tuple[int, ...]
    hat: tuple[int, ...]
    """Sixteenth steps of a bar (0-15) on which each drum sounds."""
    joints: tuple[int, ...]
    """SMPL joints (data/skeleton.py) the dance moves; never the root (0), which only turns."""
    amplitude: float
    """Largest rotation of a keypose component, radians."""
    sway: float
    """Largest root translation of a keypose sideways (x) and down (y), metres."""


GENRES = (
    Genre("ballet", (66, 84), (0, 2, 4, 5, 7, 9, 11), 72, (1.0, 0.15, 0.05), (), (), (0, 4, 8, 12),
          (3, 6, 13, 14, 16, 17, 18, 19), 0.8, 0.02),
    Genre("hiphop", (84, 100), (0, 3, 5, 7, 10), 55, (1.0, 0.0, 0.33, 0.0, 0.2), (0, 10), (4, 12),
          tuple(range(0, 16, 2)), (1, 2, 4, 5, 3, 16, 17, 18, 19), 0.6, 0.08),
    Genre("house", (118, 132), (0, 2, 3, 5, 7, 8, 10), 60, (1.0, 0.5, 0.33, 0.25, 0.2), (0, 4, 8, 12),
          (4, 12), (2, 6, 10, 14), (1, 2, 4, 5, 6, 12, 16, 17), 0.5, 0.06),
    Genre("pop", (100, 118), (0, 2, 4, 7, 9), 64, (1.0, 0.5, 0.2), (0, 8), (4, 12), tuple(range(0, 16, 2)),
          (15, 16, 17, 18, 19, 20, 21, 1, 2), 0.7, 0.04),
)  # fmt: skip
"""Four genres that differ in tempo, scale, timbre, drums and the body parts that dance."""


def keyposes(genre: Genre) -> np.ndarray:
    """(len(scale), 75) keyposes of a genre: the moved joints' axis-angles uniform in
    [-amplitude, amplitude], translation x in [-sway, sway] and y in [-sway, 0] (a dip)."""
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(genre.name.encode()).digest()[:4], "little"))
    poses = np.zeros((len(genre.scale), MOTION_DIM))
    for j in genre.joints:
        poses[:, 3 * j : 3 * j + 3] = rng.uniform(-genre.amplitude, genre.amplitude, (len(genre.scale), 3))
    poses[:, 72] = rng.uniform(-genre.sway, genre.sway, len(genre.scale))
    poses[:, 73] = rng.uniform(-genre.sway, 0.0, len(genre.scale))
    return poses


@dataclass(frozen=True)
class Song:
    genre: int
    """Index into GENRES."""
    tempo: float
    first_beat: float
    """Seconds."""
    notes: np.ndarray
    """(beats + 1,) scale degree of each beat, from the pickup beat t_{-1} = first_beat - P (which
    falls before the song starts: its note is not heard, but the dance eases out of its keypose)."""
    audio: np.ndarray
    """(seconds x sample_rate,) float32 mono in [-1, 1]."""
    motion: np.ndarray
    """(seconds x 60, 75) float32: pose and root translation per frame at 60 FPS."""

    @property
    def beat_frames(self) -> np.ndarray:
        """Frame index (60 FPS) of every beat, rounded."""
        times = self.first_beat + 60.0 / self.tempo * np.arange(len(self.notes) - 1)
        return np.round(times * FPS).astype(np.int64)


def _melody(rng: np.random.Generator, beats: int, notes: int) -> np.ndarray:
    """Scale degrees, one per beat, never repeating the previous one."""
    melody = [int(rng.integers(notes))]
    for _ in range(beats - 1):
        melody.append((melody[-1] + 1 + int(rng.integers(notes - 1))) % notes)
    return np.array(melody)


def _render(genre: Genre, tempo: float, first_beat: float, notes: np.ndarray, seconds: float,
            sample_rate: int, rng: np.random.Generator) -> np.ndarray:  # fmt: skip
    """The song's audio: the melody (a decaying tone of the genre's harmonics per beat) over its drums."""
    period = 60.0 / tempo
    audio = np.zeros(int(round(seconds * sample_rate)))

    def add(start: float, sound: np.ndarray) -> None:
        i = int(round(start * sample_rate))
        if 0 <= i < len(audio):
            n = min(len(sound), len(audio) - i)
            audio[i : i + n] += sound[:n]

    t = np.arange(int(period * sample_rate)) / sample_rate
    attack = np.minimum(t / 0.005, 1.0)
    for k, degree in enumerate(notes):
        frequency = 440.0 * 2 ** ((genre.root + genre.scale[degree] - 69) / 12)
        tone = sum(a * np.sin(2 * np.pi * (h + 1) * frequency * t) for h, a in enumerate(genre.harmonics))
        add(first_beat + (k - 1) * period, 0.5 * attack * np.exp(-t / (0.35 * period)) * tone)
    d = np.arange(int(0.25 * sample_rate)) / sample_rate
    kick = np.sin(2 * np.pi * (50 * d + 3.0 * (1 - np.exp(-d / 0.03)))) * np.exp(-d / 0.12)
    step = period / STEPS_PER_BEAT
    for s in range(-16, int((seconds - first_beat) / step) + 1):
        start, position = first_beat + s * step, s % 16
        if position in genre.kick:
            add(start, 0.9 * kick)
        if position in genre.snare:
            add(
                start,
                (0.4 * rng.standard_normal(len(d)) + 0.3 * np.sin(2 * np.pi * 180 * d)) * np.exp(-d / 0.06),
            )
        if position in genre.hat:
            add(start, 0.15 * np.diff(rng.standard_normal(len(d) + 1)) * np.exp(-d / 0.015))
    return (0.9 * audio / max(np.abs(audio).max(), 1e-9)).astype(np.float32)


def _dance(genre: Genre, tempo: float, first_beat: float, notes: np.ndarray, seconds: float,
           rng: np.random.Generator) -> np.ndarray:  # fmt: skip
    """(frames, 75) motion: keyposes on the beats, raised-cosine easing between them (see above),
    then the whole dance turned by a yaw about the vertical axis (no genre moves the root joint, so
    the root's axis-angle is that yaw)."""
    period = 60.0 / tempo
    key = keyposes(genre) * rng.uniform(0.8, 1.2)  # (notes, 75)
    time = np.arange(int(round(seconds * FPS))) / FPS
    position = (time - first_beat) / period + 1  # in beats, counted from the pickup beat t_{-1}
    beat = np.clip(np.floor(position).astype(int), 0, len(notes) - 1)
    u = np.clip((position - beat - HOLD / 2) / (1 - HOLD), 0.0, 1.0)
    here, after = notes[beat], notes[np.minimum(beat + 1, len(notes) - 1)]
    motion = key[here] + (key[after] - key[here]) * ((1 - np.cos(np.pi * u)) / 2)[:, None]
    yaw = rng.uniform(-np.pi / 2, np.pi / 2)
    turn = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    motion[:, 72:] = motion[:, 72:] @ turn.T
    motion[:, 1] = yaw
    return motion.astype(np.float32)


def make_song(seed: int, genre: int, seconds: float, sample_rate: int = 30_720) -> Song:
    """One song of GENRES[genre] and its dance, a pure function of (seed, genre, seconds)."""
    if not 0 <= genre < len(GENRES):
        raise ValueError(f"genre must be in [0, {len(GENRES)}), got {genre}")
    if seconds < 1:
        raise ValueError(f"a song needs at least a second, got {seconds}")
    g = GENRES[genre]
    rng = np.random.default_rng([seed, genre])
    tempo = float(rng.uniform(*g.tempo))
    first_beat = float(rng.uniform(0, 60.0 / tempo))
    notes = _melody(rng, math.ceil((seconds - first_beat) * tempo / 60.0) + 1, len(g.scale))
    audio = _render(g, tempo, first_beat, notes, seconds, sample_rate, rng)
    motion = _dance(g, tempo, first_beat, notes, seconds, rng)
    return Song(genre, tempo, first_beat, notes, audio, motion)


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int = 30_720) -> None:
    """16-bit PCM wav of mono audio in [-1, 1] (soundfile, from the `audio` extra)."""
    import soundfile

    soundfile.write(str(path), audio, sample_rate, subtype="PCM_16")


def _song_arrays(seed: int, genre: int, seconds: float, wav: Path) -> tuple:
    """(motion, music features, beat frames, tempo) of one song, its audio read back from a wav."""
    from deepzoo.data.music import load_audio, music_features

    song = make_song(seed, genre, seconds)
    wav.parent.mkdir(parents=True, exist_ok=True)
    write_wav(wav, song.audio)
    features = music_features(load_audio(wav))
    frames = len(song.motion)
    if len(features) < frames:
        raise RuntimeError(f"{wav}: {len(features)} feature frames for {frames} motion frames")
    return song.motion, features[:frames], song.beat_frames, song.tempo


@dataclass(frozen=True)
class DanceSet:
    """Songs of one length as arrays: motion[i] dances to music[i], frame for frame at 60 FPS."""

    motion: np.ndarray
    """(songs, frames, 75) float32."""
    music: np.ndarray
    """(songs, frames, 438) float32 features (data/music.py) of the rendered wav."""
    beats: np.ndarray
    """(songs, frames) bool: True on the frames of the music's beats."""
    genre: np.ndarray
    """(songs,) index into GENRES."""
    tempo: np.ndarray
    """(songs,) beats per minute."""


VERSION = 1
"""Bump when the songs or dances change, so cached sets are rebuilt."""


def synthetic_dance_set(
    songs: int, seconds: float, seed: int, cache: str | Path | None = None, wav_dir: str | Path | None = None
) -> DanceSet:
    """`songs` songs of `seconds` each, genres in turn (song i is GENRES[(i + seed) % 4]), song i
    made from seed (seed, i): rendered to wav (kept in `wav_dir` when given), read back and run
    through `music_features`. The set is cached in `cache` (a directory) when given, keyed by
    (VERSION, songs, seconds, seed). Songs are made in parallel, one process per CPU; a song costs
    about a seventh of its duration of one CPU."""
    if songs < 1:
        raise ValueError(f"need at least one song, got {songs}")
    key = f"dance-v{VERSION}-{songs}x{seconds:g}s-seed{seed}.npz"
    if cache is not None and (Path(cache) / key).is_file():
        with np.load(Path(cache) / key) as stored:
            return DanceSet(**{name: stored[name] for name in DanceSet.__dataclass_fields__})
    frames = int(round(seconds * FPS))
    genre = (np.arange(songs) + seed) % len(GENRES)
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [(seed * 1_000_003 + i, int(genre[i]), seconds, Path(wav_dir or tmp) / f"song{i:04d}.wav")
                for i in range(songs)]  # fmt: skip
        workers = min(os.cpu_count() or 1, songs // 8)  # a worker starts librosa: seconds
        if workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                made = list(pool.map(_song_arrays, *zip(*jobs)))
        else:
            made = [_song_arrays(*job) for job in jobs]
    motion, music, beat_frames, tempo = zip(*made)
    beats = np.zeros((songs, frames), dtype=bool)
    for i, on_beat in enumerate(beat_frames):
        beats[i, on_beat[on_beat < frames]] = True
    result = DanceSet(np.stack(motion), np.stack(music), beats, genre, np.array(tempo))
    if cache is not None:
        from deepzoo.files import write_cache

        buffer = io.BytesIO()
        np.savez(buffer, **{name: getattr(result, name) for name in DanceSet.__dataclass_fields__})
        write_cache(Path(cache) / key, buffer.getvalue())
    return result
