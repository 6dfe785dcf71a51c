"""The 438-d AIST++ music feature: its layout, its frame rate, its beat column on a click track,
and its MFCCs against librosa's own call."""

from pathlib import Path

import numpy as np
import pytest

librosa = pytest.importorskip("librosa")

from deepzoo.data.music import COLUMNS, FEATURE_DIM, FPS, SAMPLE_RATE, music_features  # noqa: E402


def _tone_and_noise(seconds, sr):
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.normal(size=len(t))).astype(np.float32)


@pytest.mark.parametrize("sr", [SAMPLE_RATE, 22050])
def test_features_have_438_columns_at_60_frames_per_second(sr):
    seconds = 3.0
    features = music_features(_tone_and_noise(seconds, sr), sample_rate=sr)
    assert features.shape[1] == FEATURE_DIM == 438 and features.dtype == np.float32
    assert abs(len(features) - seconds * FPS) <= 1
    assert np.isfinite(features).all()
    assert COLUMNS["tempogram"].stop - COLUMNS["tempogram"].start == 384


def test_mfccs_are_librosas_own():
    samples = _tone_and_noise(2.0, SAMPLE_RATE)
    expected = librosa.feature.mfcc(y=samples, sr=SAMPLE_RATE, n_mfcc=20, hop_length=512).T
    features = music_features(samples)
    np.testing.assert_allclose(features[:, COLUMNS["mfcc"]], expected[: len(features)], rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(
        features[:, COLUMNS["mfcc_delta"]],
        librosa.feature.delta(expected.T).T[: len(features)],
        rtol=1e-5,
        atol=1e-3,
    )


def test_the_beat_column_fires_on_every_click_of_a_120_bpm_track():
    clicks = np.arange(0.5, 10.0, 0.5)  # 120 BPM
    audio = librosa.clicks(times=clicks, sr=SAMPLE_RATE, length=int(10.5 * SAMPLE_RATE))
    features = music_features(audio.astype(np.float32))
    beats = np.flatnonzero(features[:, COLUMNS["beat"]])
    click_frames = clicks * FPS
    nearest = np.abs(click_frames[:, None] - beats[None, :]).min(axis=1)
    assert (nearest <= 1).all(), (click_frames, beats)
    assert len(beats) <= len(clicks)  # and no beats between the clicks


def test_bad_audio_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="song.wav"):
        music_features(tmp_path / "song.wav")
    with pytest.raises(ValueError, match="mono"):
        music_features(np.zeros((2, 1000), dtype=np.float32))
    with pytest.raises(ValueError, match="too short"):
        music_features(np.zeros(100, dtype=np.float32))
    with pytest.raises(ValueError, match="too short for features: 1023 samples"):  # two hops at least
        music_features(np.zeros(2 * 512 - 1, dtype=np.float32))


def test_cached_features_equal_the_computed_ones_and_are_keyed_by_the_files_bytes(tmp_path, monkeypatch):
    import soundfile

    from deepzoo.data import music

    monkeypatch.setenv("DEEPZOO_CACHE", str(tmp_path / "cache"))
    song, other = tmp_path / "song.wav", tmp_path / "other.wav"
    soundfile.write(str(song), _tone_and_noise(1.0, SAMPLE_RATE), SAMPLE_RATE, subtype="PCM_16")
    soundfile.write(str(other), 0.5 * _tone_and_noise(1.0, SAMPLE_RATE), SAMPLE_RATE, subtype="PCM_16")
    computed = music_features(song)
    np.testing.assert_array_equal(music.cached_music_features(song), computed)
    stored = list((tmp_path / "cache" / "music-features").iterdir())
    assert len(stored) == 1 and stored[0].suffix == ".npy"

    calls = []
    real = music.music_features
    monkeypatch.setattr(music, "music_features", lambda path: calls.append(path) or real(path))
    np.testing.assert_array_equal(music.cached_music_features(song), computed)  # read back, not computed
    assert calls == []
    assert not np.array_equal(music.cached_music_features(other), computed) and calls == [other]

    stored[0].write_bytes(b"not an array")  # a damaged cache file is computed again and replaced
    np.testing.assert_array_equal(music.cached_music_features(song), computed)
    assert calls == [other, song] and np.array_equal(np.load(stored[0]), computed)
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        music.cached_music_features(tmp_path / "missing.wav")
    (tmp_path / "blocked").write_text("a file where the cache folder should be")
    monkeypatch.setenv("DEEPZOO_CACHE", str(tmp_path / "blocked"))  # unwritable: computed, not kept
    np.testing.assert_array_equal(music.cached_music_features(song), computed)
    assert calls == [other, song, song]

    monkeypatch.setenv("DEEPZOO_CACHE", str(tmp_path / "cache"))
    np.save(stored[0], np.zeros((5, 3), dtype=np.float32))  # a readable array of the wrong shape
    np.testing.assert_array_equal(music.cached_music_features(song), computed)
    assert calls == [other, song, song, song] and np.array_equal(np.load(stored[0]), computed)
    edited = tmp_path / "music.py"  # the extractor's source changed: the key changes with it
    edited.write_text(Path(music.__file__).read_text() + "\n# edited\n")
    monkeypatch.setattr(music, "__file__", str(edited))
    np.testing.assert_array_equal(music.cached_music_features(song), computed)
    assert calls == [other, song, song, song, song] and len(list(stored[0].parent.iterdir())) == 3


def _tone_and_clicks(seconds=6.0):
    """A 440 Hz tone (pitch class A) under loud clicks at 120 BPM (every 30 frames)."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    clicks = librosa.clicks(times=np.arange(0.5, seconds - 0.5, 0.5), sr=SAMPLE_RATE, length=len(t))
    return (0.2 * np.sin(2 * np.pi * 440 * t) + clicks).astype(np.float32)


def test_chroma_onset_and_tempogram_are_the_documented_librosa_calls():
    """Chroma (CQT) of the harmonic part, onset strength of the percussive part with the median
    over mel bands, the tempogram of that envelope: AIST++'s extractor, call by call."""
    samples = _tone_and_clicks()
    features = music_features(samples)
    frames = len(features)
    harmonic, percussive = librosa.effects.hpss(samples)
    chroma = librosa.feature.chroma_cqt(y=harmonic, sr=SAMPLE_RATE, hop_length=512, n_chroma=12)
    onset = librosa.onset.onset_strength(y=percussive, sr=SAMPLE_RATE, hop_length=512, aggregate=np.median)
    tempogram = librosa.feature.tempogram(onset_envelope=onset, sr=SAMPLE_RATE, hop_length=512)
    np.testing.assert_allclose(features[:, COLUMNS["chroma"]], chroma.T[:frames], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(features[:, COLUMNS["onset"]], onset[:frames], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(features[:, COLUMNS["tempogram"]], tempogram.T[:frames], rtol=1e-5, atol=1e-5)


def test_chroma_names_the_tone_and_the_tempogram_peaks_at_the_click_period():
    """Properties of the columns rather than of the calls: the harmonic part's chroma holds the
    tone's pitch class (A, index 9 from C) through the clicks, the percussive onset envelope fires
    on the clicks and not between them, and its autocorrelation (the tempogram, lag 0 first)
    peaks at the 30-frame click period among lags 15-45."""
    features = music_features(_tone_and_clicks())
    middle = features[60:-60]
    assert (middle[:, COLUMNS["chroma"]].argmax(1) == 9).mean() > 0.95
    onset = middle[:, COLUMNS["onset"]]
    at_click = np.zeros(len(onset), dtype=bool)
    for frame in range(0, len(onset), 30):  # the clicks fall on frames 30 k of the song: 0 of middle
        at_click[max(frame - 1, 0) : frame + 2] = True
    assert onset[~at_click].max() < 0.25 * onset[at_click].max()
    lags = middle[:, COLUMNS["tempogram"]][:, 15:46].mean(0)
    assert 15 + int(lags.argmax()) == 30
