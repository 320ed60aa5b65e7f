"""Offline text-to-speech for the simulated agent and the audio corpus (eSpeak NG, no network).

`synthesize` returns int16 mono speech at any rate from 8 to 48 kHz, plus where each word starts,
so callers can tell how much of a reply was heard before an interruption. Results are cached:
the local server speaks the same few replies on hundreds of concurrent calls.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass

import numpy as np

from uvbench.audio import pcm as _pcm
from uvbench.audio._espeak import SynthesisError, WordMark, synthesize_raw
from uvbench.audio.sized_cache import SizedLru

__all__ = ["Speech", "SynthesisError", "synthesize", "DEFAULT_WPM", "DEFAULT_VOICE"]

DEFAULT_WPM = 175
DEFAULT_VOICE = "en-us"
CACHE_BYTES = 256 * 2**20
"""Synthesized speech kept for reuse, by the bytes of its audio (a reply of two minutes at 48 kHz
is 11 MB; the agent's greeting and canned replies are a few hundred KB and stay cached)."""


# eq=False: the audio is an array, so field-wise equality/hashing would be ambiguous; cached
# results are shared, so identity is the meaningful comparison.
@dataclass(frozen=True, eq=False)
class Speech:
    """Synthesized speech. `pcm` is read-only because cached results are shared between calls.

    words: the text's whitespace-separated tokens, one per spoken word; a token the engine does
    not voice (a lone dash or ellipsis) is joined to its neighbour, so " ".join(words) gives the
    text back with whitespace normalised. word_starts: the sample (at sample_rate) where each
    word begins, non-decreasing and inside the audio.
    """

    pcm: np.ndarray
    sample_rate: int
    text: str
    words: tuple[str, ...]
    word_starts: tuple[int, ...]

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / self.sample_rate


def synthesize(text: str, sample_rate: int, *, wpm: int = DEFAULT_WPM, voice: str = DEFAULT_VOICE) -> Speech:
    """Speak `text` at `sample_rate` Hz (8000..48000) and `wpm` words per minute.

    eSpeak NG limits the rate to roughly 80..450 wpm and clamps values outside it. The audio is
    kept as the engine produced it, including its few ms of leading and trailing silence.
    Raises SynthesisError if libespeak-ng cannot be loaded or lacks `voice`.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    _pcm.check_rate(sample_rate)
    if isinstance(wpm, bool) or not isinstance(wpm, int) or wpm <= 0:
        raise ValueError(f"wpm must be a positive whole number, got {wpm!r}")
    key = (text, int(sample_rate), wpm, voice)
    return _CACHE.get_or_make(key, lambda: _synthesize_uncached(*key))


_CACHE: SizedLru[Speech] = SizedLru(CACHE_BYTES, lambda speech: speech.pcm.nbytes)


def _synthesize_uncached(text: str, sample_rate: int, wpm: int, voice: str) -> Speech:
    raw = synthesize_raw(text, wpm, voice)
    audio = _pcm.to_int16(
        _pcm.resample(raw.pcm.astype(np.float64) / _pcm.INT16_SCALE, raw.sample_rate, sample_rate)
    )
    audio.flags.writeable = False
    words, engine_starts = align_words(text, raw.marks)
    # soxr keeps time aligned, so an engine sample maps to the same instant by rate ratio alone.
    scale = sample_rate / raw.sample_rate
    last = max(len(audio) - 1, 0)
    starts: list[int] = []
    for sample in engine_starts:
        start = min(max(round(sample * scale), 0), last)
        starts.append(max(start, starts[-1]) if starts else start)
    return Speech(audio, sample_rate, text, words, tuple(starts))


def align_words(text: str, marks: tuple[WordMark, ...]) -> tuple[tuple[str, ...], list[int]]:
    """Group the engine's word events by the text token they fall in.

    The engine reports several events for one token ("4572" is spoken as four words, "555-1234"
    as many) and none for punctuation-only tokens; callers want the text's own words, each
    starting at its first event. Returns (words, start sample per word at the engine rate).
    """
    tokens = [(m.start(), m.group()) for m in re.finditer(r"\S+", text)]
    token_starts = [start for start, _ in tokens]
    first_sample: dict[int, int] = {}
    for mark in marks:
        index = max(bisect_right(token_starts, mark.char_offset) - 1, 0)
        if index < len(tokens):
            first_sample[index] = min(first_sample.get(index, mark.sample), mark.sample)

    words: list[str] = []
    starts: list[int] = []
    pending = ""  # unvoiced tokens before the first voiced one, prefixed to it
    for index, (_, token) in enumerate(tokens):
        if index in first_sample:
            words.append(f"{pending} {token}" if pending else token)
            starts.append(first_sample[index])
            pending = ""
        elif words:
            words[-1] = f"{words[-1]} {token}"
        else:
            pending = f"{pending} {token}" if pending else token
    return tuple(words), starts
