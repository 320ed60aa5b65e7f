"""Offline speech synthesis (eSpeak NG through ctypes): timing, words, levels, cache, errors."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from uvbench.audio import _espeak
from uvbench.audio._espeak import WordMark
from uvbench.audio.tts import Speech, SynthesisError, align_words, synthesize

TEXT = "Hi, I'd like to check the status of my order."
RATES = [8000, 16000, 24000, 48000]
ALL_RATES = [8000, 16000, 22050, 24000, 44100, 48000]


def dbfs(pcm: np.ndarray) -> float:
    x = pcm.astype(np.float64) / 32768.0
    return 20.0 * np.log10(np.sqrt(np.mean(x * x)))


def test_duration_is_consistent_across_rates():
    durations = [synthesize(TEXT, rate).duration_s for rate in RATES]
    assert max(durations) - min(durations) <= 0.001
    assert 1.5 < durations[0] < 4.0  # ten words at 175 wpm


@pytest.mark.parametrize("rate", ALL_RATES)
def test_speech_shape_and_word_starts(rate: int):
    speech = synthesize(TEXT, rate)
    assert isinstance(speech, Speech)
    assert speech.sample_rate == rate and speech.text == TEXT
    assert speech.pcm.dtype == np.int16 and speech.pcm.ndim == 1
    assert speech.duration_s == pytest.approx(len(speech.pcm) / rate)
    starts = np.array(speech.word_starts)
    assert len(starts) == len(speech.words)
    assert np.all(np.diff(starts) > 0), "word starts must increase"
    assert starts[0] >= 0 and starts[-1] < len(speech.pcm)


def test_words_match_the_text():
    speech = synthesize(TEXT, 16000)
    assert speech.words == tuple(TEXT.split())
    assert len(synthesize("My order number is four five seven two.", 16000).words) == 8


def test_word_starts_are_the_same_instants_at_every_rate():
    reference = np.array(synthesize(TEXT, 22050).word_starts) / 22050
    for rate in RATES:
        times = np.array(synthesize(TEXT, rate).word_starts) / rate
        assert np.max(np.abs(times - reference)) <= 0.001


def test_word_starts_fall_on_speech():
    speech = synthesize(TEXT, 16000)
    window = 16000 // 10  # each word has sound within 100 ms of its start
    for start in speech.word_starts:
        assert np.max(np.abs(speech.pcm[start : start + window])) > 1000


@pytest.mark.parametrize("rate", RATES)
def test_speech_is_audible_at_a_sensible_level(rate: int):
    pcm = synthesize(TEXT, rate).pcm
    voiced = np.flatnonzero(pcm)
    assert voiced.size > 0.8 * len(pcm), "mostly sound, only a few ms of engine silence"
    level = dbfs(pcm[voiced[0] : voiced[-1] + 1])
    assert -30.0 < level < -12.0, f"speech RMS {level:.1f} dBFS"
    assert np.max(np.abs(pcm.astype(np.int32))) > 8000


def test_cache_returns_the_identical_object():
    first = synthesize(TEXT, 16000)
    assert synthesize(TEXT, 16000) is first
    assert synthesize(TEXT, 16000, wpm=175, voice="en-us") is first
    assert synthesize(TEXT, 24000) is not first


def test_cached_audio_is_read_only():
    speech = synthesize(TEXT, 16000)
    with pytest.raises(ValueError):
        speech.pcm[0] = 1


def test_speaking_rate_changes_duration():
    slow = synthesize(TEXT, 16000, wpm=120).duration_s
    fast = synthesize(TEXT, 16000, wpm=240).duration_s
    assert slow > 1.5 * fast


def test_numbers_and_punctuation_keep_the_text_words():
    text = "Call 555-1234 — now, or 4572 tomorrow…"
    speech = synthesize(text, 16000)
    assert " ".join(speech.words) == " ".join(text.split())
    assert speech.words == ("Call", "555-1234 —", "now,", "or", "4572", "tomorrow…")
    assert np.all(np.diff(speech.word_starts) > 0)


def test_empty_text_has_no_words():
    speech = synthesize("", 16000)
    assert speech.words == () and speech.word_starts == ()


def test_align_words_groups_engine_events_by_token():
    # "4572" gives several events inside one token; "—" gives none and joins its neighbour.
    marks = (WordMark(0, 0), WordMark(5, 100), WordMark(6, 200), WordMark(13, 300))
    words, starts = align_words("Say 4572 — ok", marks)
    assert words == ("Say", "4572 —", "ok")
    assert starts == [0, 100, 300]
    assert align_words("— hi", (WordMark(2, 50),)) == (("— hi",), [50])
    assert align_words("...", ()) == ((), [])


def test_concurrent_synthesis_is_consistent():
    texts = [
        f"Please hold for agent {name}, thank you."
        for name in ("Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi")
    ]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda t: synthesize(t, 16000), texts * 3))
    for text, speech in zip(texts * 3, results, strict=True):
        assert speech.text == text and speech.words == tuple(text.split())
        assert 1.0 < speech.duration_s < 4.0
    # Concurrent misses may build separate Speech objects, but from one engine render.
    for i in range(len(texts)):
        assert np.array_equal(results[i].pcm, results[i + 8].pcm)
        assert np.array_equal(results[i].pcm, results[i + 16].pcm)


@pytest.mark.parametrize("rate", [7999, 48001, 16000.0])
def test_rejects_unsupported_rates(rate):
    with pytest.raises(ValueError):
        synthesize(TEXT, rate)


def test_rejects_bad_wpm():
    with pytest.raises(ValueError):
        synthesize(TEXT, 16000, wpm=0)


def test_unknown_voice_is_a_synthesis_error():
    with pytest.raises(SynthesisError, match="no voice"):
        synthesize(TEXT, 16000, voice="no-such-voice")
    assert synthesize("Still works.", 16000).words == ("Still", "works.")


def test_missing_library_says_how_to_fix_it():
    with pytest.raises(SynthesisError, match="pip install espeakng-loader"):
        _espeak.load_library("/nonexistent/libespeak-ng.so")
