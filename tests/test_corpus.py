"""The committed audio corpus, its manifest, and the speech-bounds detector that annotates it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from uvbench.audio.bounds import speech_bounds
from uvbench.audio.corpus import (
    CORPUS_DIR,
    MANIFEST_NAME,
    load_clip_pcm,
    load_manifest,
    write_manifest,
)
from uvbench.audio.make_corpus import CLIPS, build_corpus
from uvbench.audio.tts import synthesize

CLIP_NAMES = [spec.file for spec in CLIPS]


def ms(samples: int, rate: int) -> float:
    return 1000.0 * samples / rate


# --- speech_bounds on constructed clips ------------------------------------------------------


def tone_clip(rate: int, lead: int, length: int, trail: int, amplitude: float = 0.5) -> np.ndarray:
    # A phase offset makes the first and last tone samples non-zero, so the bounds are exact.
    n = np.arange(length)
    tone = amplitude * np.sin(2 * np.pi * 440.0 * n / rate + 0.3)
    return np.concatenate([np.zeros(lead), tone, np.zeros(trail)])


@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000])
def test_bounds_of_a_tone_are_exact(rate: int):
    x = tone_clip(rate, lead=3001, length=rate // 5 + 7, trail=4000)
    expected = (3001, 3001 + rate // 5 + 7)
    assert speech_bounds(x, rate) == expected  # float
    as_int16 = np.round(x * 32767).astype(np.int16)
    assert speech_bounds(as_int16, rate) == expected
    assert speech_bounds(np.column_stack([as_int16, as_int16]), rate) == expected  # stereo


def test_bounds_of_a_tone_in_noise_are_within_a_millisecond():
    rate = 16000
    x = tone_clip(rate, lead=4800, length=8000, trail=9600)
    x = x + np.random.default_rng(1).normal(0.0, 10 ** (-65 / 20), x.size)
    start, end = speech_bounds(x, rate)
    assert abs(start - 4800) <= rate // 1000 and abs(end - 12800) <= rate // 1000


@pytest.mark.parametrize("rate", [8000, 16000, 24000, 48000])
def test_bounds_of_synthesized_speech(rate: int):
    pcm = synthesize("Can you tell me when it will arrive?", rate).pcm
    voiced = np.flatnonzero(pcm)
    lead, trail = rate // 4, rate // 2
    clip = np.concatenate([np.zeros(lead, np.int16), pcm, np.zeros(trail, np.int16)])
    start, end = speech_bounds(clip, rate)
    tolerance = 2 * rate // 1000
    assert abs(start - (lead + voiced[0])) <= tolerance
    assert abs(end - (lead + voiced[-1] + 1)) <= tolerance


def test_silence_and_quiet_noise_have_no_speech():
    assert speech_bounds(np.zeros(16000, np.int16), 16000) is None
    assert speech_bounds(np.zeros(0), 16000) is None
    noise = np.random.default_rng(2).normal(0.0, 10 ** (-65 / 20), 16000)
    assert speech_bounds(noise, 16000) is None


def test_threshold_decides_what_counts_as_speech():
    x = tone_clip(16000, lead=1000, length=1600, trail=1000, amplitude=10 ** (-50 / 20))
    assert speech_bounds(x, 16000) is None  # about -53 dBFS RMS: below the default -45
    assert speech_bounds(x, 16000, threshold_db=-60.0) == (1000, 2600)


def test_clip_shorter_than_the_window():
    x = np.zeros(20)
    x[5:9] = 0.5
    assert speech_bounds(x, 16000) == (5, 9)


# --- the committed corpus ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifest():
    return load_manifest()


def test_manifest_lists_every_clip(manifest):
    assert list(manifest) == CLIP_NAMES
    for name, clip in manifest.items():
        assert clip.file == name and clip.path == CORPUS_DIR / name


@pytest.mark.parametrize("name", CLIP_NAMES)
def test_clip_file_matches_its_entry(manifest, name: str):
    clip = manifest[name]
    assert clip.path.is_file()
    info = sf.info(clip.path)
    assert info.samplerate == clip.sample_rate
    assert info.channels == clip.channels
    assert info.format == clip.format and info.subtype == "PCM_16"
    assert info.frames / info.samplerate == pytest.approx(clip.duration_s, abs=1e-6)
    rate = clip.sample_rate
    assert clip.speech_start_s == pytest.approx(clip.speech_start_sample / rate, abs=1e-6)
    assert clip.speech_end_s == pytest.approx(clip.speech_end_sample / rate, abs=1e-6)
    speech_s = clip.speech_end_s - clip.speech_start_s
    assert (6.0 <= speech_s <= 8.0) if name.startswith("long_") else (0.3 <= speech_s <= 4.0)
    assert clip.speech_start_s >= 0.25 and clip.duration_s - clip.speech_end_s >= 0.5  # padded


@pytest.mark.parametrize("name", CLIP_NAMES)
def test_manifest_bounds_agree_with_speech_bounds(manifest, name: str):
    clip = manifest[name]
    data, rate = sf.read(clip.path, dtype="int16", always_2d=True)
    start, end = speech_bounds(data, rate)
    assert abs(ms(start - clip.speech_start_sample, rate)) <= 2.0
    assert abs(ms(end - clip.speech_end_sample, rate)) <= 2.0


def test_stereo_clip_has_speech_on_both_channels(manifest):
    data, _ = sf.read(manifest["thanks_44k_stereo.wav"].path, dtype="int16", always_2d=True)
    assert data.shape[1] == 2 and np.array_equal(data[:, 0], data[:, 1])


@pytest.mark.parametrize("name", CLIP_NAMES)
def test_load_clip_pcm_resamples_to_16k_keeping_duration(manifest, name: str):
    clip = manifest[name]
    pcm = load_clip_pcm(clip, 16000)
    assert pcm.dtype == np.int16 and pcm.ndim == 1
    assert abs(len(pcm) / 16000 - clip.duration_s) <= 0.001
    start, end = speech_bounds(pcm, 16000)
    assert abs(start / 16000 - clip.speech_start_s) <= 0.003  # resampler ringing at low rates
    assert abs(end / 16000 - clip.speech_end_s) <= 0.003


def test_load_clip_pcm_at_the_native_rate_is_the_file(manifest):
    clip = manifest["hello_16k.wav"]
    assert np.array_equal(load_clip_pcm(clip, 16000), sf.read(clip.path, dtype="int16")[0])


def test_manifest_round_trips(manifest, tmp_path):
    write_manifest(list(manifest.values()), tmp_path)
    original = (CORPUS_DIR / MANIFEST_NAME).read_text(encoding="utf-8")
    assert (tmp_path / MANIFEST_NAME).read_text(encoding="utf-8") == original
    assert [c.to_entry() for c in manifest.values()] == json.loads(original)


def test_manifest_rejects_unknown_fields(tmp_path):
    (tmp_path / MANIFEST_NAME).write_text(json.dumps([{"file": "x.wav"}]), encoding="utf-8")
    with pytest.raises(ValueError, match="entry 0"):
        load_manifest(tmp_path)


def test_corpus_stays_small():
    total = sum(path.stat().st_size for path in CORPUS_DIR.iterdir())
    assert total < 2_000_000


def test_corpus_builds_offline(tmp_path):
    # build_corpus checks every clip's bounds against speech_bounds before writing it.
    clips = build_corpus(tmp_path)
    assert [c.file for c in clips] == CLIP_NAMES
    rebuilt = load_manifest(tmp_path)
    for name, clip in load_manifest().items():
        again = rebuilt[name]
        assert (again.text, again.sample_rate, again.channels, again.format) == (
            clip.text,
            clip.sample_rate,
            clip.channels,
            clip.format,
        )
        # Same speech up to eSpeak's pitch flutter, which shifts timing by a few ms per second.
        assert again.duration_s == pytest.approx(clip.duration_s, abs=0.1)
