"""ctypes binding to libespeak-ng (shipped with its voice data by the espeakng-loader wheel).

Only what synthesis needs: initialise once in synchronous mode, pick a voice and a speaking rate,
synthesize a text and collect its int16 audio plus the engine's word events. libespeak-ng keeps
process-global state and is not thread-safe, so every call goes through one lock.
"""

from __future__ import annotations

import ctypes
import threading
from ctypes import POINTER, c_char, c_char_p, c_int, c_short, c_size_t, c_uint, c_void_p
from dataclasses import dataclass
from typing import Any

import numpy as np

from uvbench.audio.sized_cache import SizedLru

INSTALL_HINT = "install it with `pip install espeakng-loader` (it ships libespeak-ng and its data)"

# Constants from espeak-ng's speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # report a bad data path as an error instead of exit()-ing Python
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1
_EE_OK = 0
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1


class SynthesisError(RuntimeError):
    """Speech could not be synthesized: the engine is missing, failed, or lacks the voice."""


class _EventId(ctypes.Union):
    _fields_ = [("number", c_int), ("name", c_char_p), ("string", c_char * 8)]


class _Event(ctypes.Structure):
    """espeak_EVENT. Field order and types must match speak_lib.h exactly: the callback walks an
    array of these, so a wrong size would read garbage for every event after the first."""

    _fields_ = [
        ("type", c_int),
        ("unique_identifier", c_uint),
        ("text_position", c_int),  # 1-based, in characters of the input
        ("length", c_int),
        ("audio_position", c_int),  # ms from the start of this synthesis, truncated
        ("sample", c_int),  # the same instant in samples at the engine rate
        ("user_data", c_void_p),
        ("id", _EventId),
    ]


_SynthCallback = ctypes.CFUNCTYPE(c_int, POINTER(c_short), c_int, POINTER(_Event))


@dataclass(frozen=True)
class WordMark:
    """A word event: where the word begins in the text (0-based character) and in the audio."""

    char_offset: int
    sample: int  # at the engine rate


@dataclass(frozen=True)
class RawSpeech:
    pcm: np.ndarray  # int16 mono at sample_rate
    sample_rate: int
    marks: tuple[WordMark, ...]


def load_library(path: str | None = None) -> tuple[ctypes.CDLL, str]:
    """The library and its data directory; SynthesisError saying how to fix it if unavailable."""
    try:
        import espeakng_loader
    except ImportError as exc:
        raise SynthesisError(f"espeakng-loader is not installed; {INSTALL_HINT}") from exc
    try:
        lib_path = path or espeakng_loader.get_library_path()
        data_path = espeakng_loader.get_data_path()
        lib = ctypes.CDLL(lib_path)
    except (OSError, RuntimeError) as exc:
        raise SynthesisError(f"cannot load libespeak-ng ({exc}); {INSTALL_HINT}") from exc
    return lib, data_path


class _Engine:
    """One initialised libespeak-ng. Use only while holding _LOCK."""

    def __init__(self) -> None:
        lib, data_path = load_library()
        lib.espeak_Initialize.argtypes = [c_int, c_int, c_char_p, c_int]
        lib.espeak_Initialize.restype = c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [c_char_p]
        lib.espeak_SetVoiceByName.restype = c_int
        lib.espeak_SetParameter.argtypes = [c_int, c_int, c_int]
        lib.espeak_SetParameter.restype = c_int
        lib.espeak_Synth.argtypes = [
            c_void_p,
            c_size_t,
            c_uint,
            c_int,
            c_uint,
            c_uint,
            POINTER(c_uint),
            c_void_p,
        ]
        lib.espeak_Synth.restype = c_int
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), _INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise SynthesisError(f"libespeak-ng failed to initialise with data at {data_path}")
        self.lib = lib
        self.sample_rate = rate
        self._voice: str | None = None
        self._chunks: list[np.ndarray] = []
        self._marks: list[WordMark] = []
        self._error: BaseException | None = None
        # Keep a reference: ctypes does not, and a collected callback crashes the process.
        self._callback = _SynthCallback(self._on_audio)
        lib.espeak_SetSynthCallback(self._callback)

    def _on_audio(self, wav: Any, num_samples: int, events: Any) -> int:
        try:
            if num_samples > 0 and wav:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
            i = 0
            while events[i].type != _EVENT_LIST_TERMINATED:
                event = events[i]
                if event.type == _EVENT_WORD:
                    self._marks.append(self._mark(event))
                i += 1
            return 0
        except Exception as exc:  # an exception cannot cross into C: keep it, stop the engine
            self._error = exc
            return 1

    def _mark(self, event: _Event) -> WordMark:
        # `sample` is exact; audio_position is the same instant truncated to ms. Prefer the exact
        # one, but fall back if a library build ever leaves `sample` unfilled.
        sample = event.sample
        if abs(sample * 1000 / self.sample_rate - event.audio_position) > 1.5:
            sample = round(event.audio_position * self.sample_rate / 1000)
        return WordMark(char_offset=max(event.text_position - 1, 0), sample=sample)

    def synthesize(self, text: str, wpm: int, voice: str) -> RawSpeech:
        if voice != self._voice:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
                self._voice = None
                raise SynthesisError(f"eSpeak NG has no voice named {voice!r}")
            self._voice = voice
        # After the voice: selecting a voice may reset the rate to the voice's own.
        self.lib.espeak_SetParameter(_PARAM_RATE, wpm, 0)
        # A NUL would end the C string early; a space keeps character offsets unchanged.
        data = text.replace("\x00", " ").encode("utf-8")
        self._chunks, self._marks, self._error = [], [], None
        status = self.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if self._error is not None:
            raise SynthesisError(f"synthesis callback failed: {self._error!r}") from self._error
        if status != _EE_OK:
            raise SynthesisError(f"espeak_Synth failed with status {status}")
        pcm = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        pcm.flags.writeable = False  # cached and shared
        return RawSpeech(pcm=pcm, sample_rate=self.sample_rate, marks=tuple(self._marks))


_LOCK = threading.Lock()
_ENGINE: _Engine | None = None
RAW_CACHE_BYTES = 128 * 2**20
"""Raw renders kept (by the bytes of their audio, at the engine's 22,050 Hz): one render per text
serves every sample rate derived from it while it is kept."""


def synthesize_raw(text: str, wpm: int, voice: str) -> RawSpeech:
    """Audio at the engine's own rate plus word marks. Thread-safe; initialises on first use.

    Cached, and rendered at most once per (text, wpm, voice) while cached: eSpeak NG varies the
    pitch slightly ("flutter", from a static counter in wavegen.c that no API call resets), so a
    second render of the same text can come out a few ms longer or shorter. Every sample rate
    derived from one render keeps the same timing.
    """
    with _LOCK:
        return _RAW_CACHE.get_or_make((text, wpm, voice), lambda: _render(text, wpm, voice))


_RAW_CACHE: SizedLru[RawSpeech] = SizedLru(RAW_CACHE_BYTES, lambda raw: raw.pcm.nbytes)


def _render(text: str, wpm: int, voice: str) -> RawSpeech:
    # Only called with _LOCK held, which also serialises the cache's misses.
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = _Engine()
    return _ENGINE.synthesize(text, wpm, voice)
