"""Audio files to the wire format: decoding, downmix, resampling quality, caching, errors."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given
from hypothesis import strategies as st

from uvbench.audio import source
from uvbench.audio.corpus import load_clip_pcm, load_manifest
from uvbench.audio.source import AudioFileError, load_pcm, read_audio, speech_bounds_at

CORPUS_RATES = [8000, 16000, 22050, 24000, 44100, 48000]
WIRE_RATES = [8000, 16000, 24000, 48000]
TONE_HZ = 440.0  # below the lowest Nyquist (4 kHz)
TONE_AMPLITUDE = 0.5
TONE_S = 2.0  # FFT bins of 0.5 Hz at any rate


@pytest.fixture(autouse=True)
def empty_cache():
    source.clear_cache()
    yield
    source.clear_cache()


def tone(rate: int, seconds: float = TONE_S, hz: float = TONE_HZ) -> np.ndarray:
    n = np.arange(round(seconds * rate))
    return TONE_AMPLITUDE * np.sin(2 * np.pi * hz * n / rate)


def write(path: Path, audio: np.ndarray, rate: int) -> Path:
    fmt = {".wav": "WAV", ".flac": "FLAC"}[path.suffix]
    sf.write(path, audio, rate, format=fmt, subtype="PCM_16")
    return path


TONE_FILES = [
    (rate, ext, channels) for rate in CORPUS_RATES for ext in (".wav", ".flac") for channels in (1, 2)
]


@pytest.fixture(scope="module")
def tone_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tones")
    for rate, ext, channels in TONE_FILES:
        mono = tone(rate)
        audio = mono if channels == 1 else np.column_stack([mono, mono])
        write(folder / f"tone_{rate}_{channels}ch{ext}", audio, rate)
    return folder


def dominant_hz(pcm: np.ndarray, rate: int) -> float:
    x = pcm.astype(np.float64) * np.hanning(len(pcm))
    spectrum = np.abs(np.fft.rfft(x))
    return float(np.fft.rfftfreq(len(pcm), 1.0 / rate)[int(np.argmax(spectrum))])


def rms_db(x: np.ndarray) -> float:
    return 20.0 * np.log10(np.sqrt(np.mean(np.square(x.astype(np.float64)))))


@pytest.mark.parametrize(("rate", "ext", "channels"), TONE_FILES, ids=lambda v: str(v))
def test_tone_files_keep_duration_pitch_and_level(tone_dir: Path, rate: int, ext: str, channels: int):
    path = tone_dir / f"tone_{rate}_{channels}ch{ext}"
    n = round(TONE_S * rate)
    expected_db = rms_db(np.full(1, TONE_AMPLITUDE * 32768.0 / np.sqrt(2)))
    for out in WIRE_RATES:
        pcm = load_pcm(path, out)
        assert pcm.dtype == np.int16 and pcm.ndim == 1
        assert not pcm.flags.writeable
        assert abs(len(pcm) - round(n * out / rate)) <= 1, f"{rate} -> {out}: {len(pcm)} samples"
        assert abs(dominant_hz(pcm, out) - TONE_HZ) <= 2.0, f"{rate} -> {out}"
        edge = out // 10  # resampler filters ring at the abrupt start and end of the file
        assert abs(rms_db(pcm[edge:-edge]) - expected_db) <= 0.5, f"{rate} -> {out}"


def test_same_rate_is_bit_exact(tmp_path: Path):
    rate = 16000
    audio = np.round(tone(rate) * 32767).astype(np.int16)
    path = write(tmp_path / "exact.wav", audio, rate)
    np.testing.assert_array_equal(load_pcm(path, rate), audio)


def test_stereo_is_averaged(tmp_path: Path):
    left = np.full(1600, 0.25)
    right = np.full(1600, -0.125)
    path = write(tmp_path / "stereo.flac", np.column_stack([left, right]), 16000)
    pcm = load_pcm(path, 16000)
    assert np.all(pcm == round(0.0625 * 32768))


def test_ogg_vorbis_decodes(tmp_path: Path):
    path = tmp_path / "tone.ogg"
    sf.write(path, tone(24000), 24000, format="OGG", subtype="VORBIS")
    pcm = load_pcm(path, 16000)
    assert abs(len(pcm) - round(TONE_S * 16000)) <= 1
    assert abs(dominant_hz(pcm, 16000) - TONE_HZ) <= 2.0


def test_read_audio_keeps_the_file_as_is(tone_dir: Path):
    decoded = read_audio(tone_dir / "tone_44100_2ch.flac")
    assert decoded.sample_rate == 44100 and decoded.channels == 2 and decoded.format == "FLAC"
    assert decoded.frames == round(TONE_S * 44100)
    assert decoded.samples.dtype == np.float64


# --- cache ------------------------------------------------------------------------------------


def test_cache_returns_the_same_array(tone_dir: Path):
    path = tone_dir / "tone_22050_1ch.wav"
    first = load_pcm(path, 16000)
    assert load_pcm(path, 16000) is first
    assert load_pcm(str(path), 16000) is first  # str or Path
    relative = os.path.relpath(path)
    assert load_pcm(relative, 16000) is first  # same resolved path
    assert load_pcm(path, 8000) is not first  # one entry per rate
    assert source.cache_size() == 2


def test_changed_file_is_decoded_again(tmp_path: Path):
    path = write(tmp_path / "clip.wav", tone(16000, 1.0), 16000)
    first = load_pcm(path, 16000)
    assert len(first) == 16000
    write(path, tone(16000, 0.5, hz=880.0), 16000)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000_000))
    second = load_pcm(path, 16000)
    assert second is not first and len(second) == 8000
    assert abs(dominant_hz(second, 16000) - 880.0) <= 2.0
    assert load_pcm(path, 16000) is second
    assert source.cache_size() == 1  # the stale version is dropped


def test_same_size_rewrite_with_new_mtime_is_decoded_again(tmp_path: Path):
    path = write(tmp_path / "clip.flac", tone(16000, 1.0), 16000)
    first = load_pcm(path, 16000)
    stat = path.stat()
    with open(path, "r+b") as f:  # same size, different content, in place
        data = bytearray(f.read())
        f.seek(0)
        f.write(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000))
    assert load_pcm(path, 16000) is not first


def test_concurrent_calls_share_one_decode(tone_dir: Path, monkeypatch: pytest.MonkeyPatch):
    decodes = []
    real = source.read_audio

    def counting(path):
        decodes.append(path)
        return real(path)

    monkeypatch.setattr(source, "read_audio", counting)
    path = tone_dir / "tone_48000_2ch.flac"
    results: list[np.ndarray] = []
    barrier = threading.Barrier(32)

    def worker():
        barrier.wait()
        results.append(load_pcm(path, 24000))

    threads = [threading.Thread(target=worker) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 32
    assert all(result is results[0] for result in results)
    assert len(decodes) == 1


def test_cache_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(source, "CACHE_ENTRIES", 3)
    paths = [write(tmp_path / f"c{i}.wav", tone(8000, 0.1), 8000) for i in range(5)]
    for path in paths:
        load_pcm(path, 8000)
    assert source.cache_size() == 3


# --- errors -----------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path):
    with pytest.raises(AudioFileError, match=r"audio file not found: .*nope\.wav; check the path"):
        load_pcm(tmp_path / "nope.wav", 16000)


def test_empty_file(tmp_path: Path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioFileError, match=r"empty\.wav is empty \(0 bytes\); record or export it again"):
        load_pcm(path, 16000)


def test_file_without_frames(tmp_path: Path):
    path = write(tmp_path / "silent.wav", np.zeros(0), 16000)
    with pytest.raises(AudioFileError, match=r"holds no audio \(0 frames\)"):
        load_pcm(path, 16000)


def test_not_audio(tmp_path: Path):
    path = tmp_path / "notes.wav"
    path.write_text("these are not samples\n")
    with pytest.raises(AudioFileError) as info:
        load_pcm(path, 16000)
    message = str(info.value)
    assert message.startswith(f"cannot decode audio file {path.resolve()}: Format not recognised;")
    assert "use WAV, FLAC or OGG" in message and "\n" not in message


def test_truncated_flac(tmp_path: Path):
    good = write(tmp_path / "good.flac", tone(16000, 1.0), 16000)
    bad = tmp_path / "bad.flac"
    bad.write_bytes(good.read_bytes()[:30])
    with pytest.raises(AudioFileError, match="cannot decode audio file"):
        load_pcm(bad, 16000)


def test_folder(tmp_path: Path):
    with pytest.raises(AudioFileError, match="is a folder, not an audio file"):
        load_pcm(tmp_path, 16000)


def test_errors_are_not_cached(tmp_path: Path):
    path = tmp_path / "later.wav"
    with pytest.raises(AudioFileError):
        load_pcm(path, 16000)
    write(path, tone(16000, 0.25), 16000)
    assert len(load_pcm(path, 16000)) == 4000


@pytest.mark.parametrize("rate", [7999, 48001, 16000.0, True])
def test_bad_rate(tone_dir: Path, rate):
    with pytest.raises(ValueError, match="sample rate"):
        load_pcm(tone_dir / "tone_16000_1ch.wav", rate)


# --- the committed corpus ---------------------------------------------------------------------


@pytest.mark.parametrize("clip", list(load_manifest().values()), ids=lambda clip: clip.file)
def test_corpus_clips_load_at_16k_with_their_duration(clip):
    pcm = load_pcm(clip.path, 16000)
    assert abs(len(pcm) - clip.duration_s * 16000) <= 1
    np.testing.assert_array_equal(pcm, load_clip_pcm(clip, 16000))  # one recipe for both loaders
    start, end = speech_bounds_at(
        (clip.speech_start_sample, clip.speech_end_sample), clip.sample_rate, 16000, target_length=len(pcm)
    )
    assert 0 < start < end <= len(pcm)
    assert abs(start / 16000 - clip.speech_start_s) < 1 / 16000 + 1 / clip.sample_rate
    assert abs(end / 16000 - clip.speech_end_s) < 1 / 16000 + 1 / clip.sample_rate


# --- speech_bounds_at -------------------------------------------------------------------------


def test_speech_bounds_at_examples():
    assert speech_bounds_at((4962, 45302), 16000, 16000) == (4962, 45302)
    assert speech_bounds_at((4962, 45302), 16000, 8000) == (2481, 22651)
    assert speech_bounds_at((4962, 45302), 16000, 48000) == (14886, 135906)
    # 22050 -> 16000: 1001 * 16000 / 22050 = 726.35 (down to 726); 2001 -> 1451.93 (up to 1452)
    assert speech_bounds_at((1001, 2001), 22050, 16000) == (726, 1452)
    assert speech_bounds_at((0, 0), 44100, 8000) == (0, 0)


def test_speech_bounds_at_caps_at_the_resampled_length():
    assert speech_bounds_at((100, 22050), 22050, 16000) == (72, 16000)
    assert speech_bounds_at((100, 22051), 22050, 16000, target_length=16000) == (72, 16000)
    assert speech_bounds_at((22050, 22051), 22050, 16000, target_length=15999) == (15999, 15999)


@pytest.mark.parametrize(
    ("bounds", "error"),
    [((5, 4), ValueError), ((-1, 4), ValueError), ((1.5, 4), TypeError), ((True, 4), TypeError)],
)
def test_speech_bounds_at_rejects_bad_bounds(bounds, error):
    with pytest.raises(error):
        speech_bounds_at(bounds, 16000, 8000)


@given(
    st.integers(min_value=0, max_value=10**7),
    st.integers(min_value=0, max_value=10**7),
    st.sampled_from(CORPUS_RATES),
    st.sampled_from(CORPUS_RATES),
)
def test_speech_bounds_at_covers_the_speech_tightly(a: int, b: int, source_rate: int, target_rate: int):
    start, end = sorted((a, b))
    new_start, new_end = speech_bounds_at((start, end), source_rate, target_rate)
    # The converted span covers the original instants, by less than one target sample each side.
    assert new_start * source_rate <= start * target_rate < (new_start + 1) * source_rate
    assert (new_end - 1) * source_rate < end * target_rate <= new_end * source_rate
    if source_rate == target_rate:
        assert (new_start, new_end) == (start, end)
