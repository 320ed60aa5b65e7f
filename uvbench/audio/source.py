"""Audio files in the wire format: int16 mono at the call's input rate, decoded once per file per rate.

A load run plays the same few clips on hundreds of concurrent calls, so `load_pcm` caches its
result process-wide, keyed by the file's identity on disk (resolved path, mtime, size, inode) and
the target rate: every call shares one decode and one read-only array, and a file edited between
runs is decoded again. The cache is thread-safe and concurrent first requests for the same key
wait for a single decode. `load_pcm` blocks; from asyncio, call it through `asyncio.to_thread`.

Resampling uses soxr's "HQ" recipe (via `uvbench.audio.pcm.resample`), not "VHQ". HQ keeps 20
bits of precision (~120 dB of stopband and noise rejection) with a flat passband over 91% of the
band; the output is int16, whose own quantisation floor is ~96 dB, so VHQ's 28 bits cannot change
the result by more than rounding while costing more CPU. Using the same recipe as the corpus
loader and the synthesizer also keeps a clip bit-identical whichever path loads it.
"""

from __future__ import annotations

import os
import stat as _stat_mode
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from uvbench.audio import pcm as _pcm

__all__ = [
    "AudioFileError",
    "DecodedAudio",
    "read_audio",
    "load_pcm",
    "speech_bounds_at",
    "clear_cache",
    "cache_size",
    "CACHE_ENTRIES",
]

CACHE_ENTRIES = 256
"""Decoded arrays kept (least recently used dropped first): a minute of 48 kHz audio is ~5.8 MB."""


class AudioFileError(ValueError):
    """An audio file that cannot be used; the message is one line: what is wrong and how to fix it."""


@dataclass(frozen=True, eq=False)
class DecodedAudio:
    """A file as decoded: float64 samples in [-1, 1] shaped (frames, channels), at its own rate."""

    samples: np.ndarray
    sample_rate: int
    format: str  # soundfile's container name: "WAV", "FLAC", "OGG", ...
    path: Path

    @property
    def channels(self) -> int:
        return int(self.samples.shape[1])

    @property
    def frames(self) -> int:
        return int(self.samples.shape[0])


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _stat(path: Path) -> os.stat_result:
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise AudioFileError(f"audio file not found: {path}; check the path") from None
    except OSError as exc:
        raise AudioFileError(f"cannot read audio file {path}: {_one_line(exc.strerror or exc)}") from None
    if _stat_mode.S_ISDIR(stat.st_mode):
        raise AudioFileError(
            f"{path} is a folder, not an audio file; give the path of a WAV, FLAC or OGG file"
        )
    if stat.st_size == 0:
        raise AudioFileError(f"audio file {path} is empty (0 bytes); record or export it again")
    return stat


def read_audio(path: str | os.PathLike[str]) -> DecodedAudio:
    """Decode a whole audio file (any format libsndfile reads: WAV, FLAC, OGG/Vorbis/Opus, MP3,
    AIFF, ...) at its own rate and channel count. Not cached; raises AudioFileError."""
    path = Path(path)
    _stat(path)
    try:
        with sf.SoundFile(path) as audio:
            samples = audio.read(dtype="float64", always_2d=True)
            rate, fmt = int(audio.samplerate), str(audio.format)
    except (sf.SoundFileError, RuntimeError, TypeError, OSError) as exc:
        # LibsndfileError's str repeats the path; its error_string is just libsndfile's reason.
        reason = _one_line(getattr(exc, "error_string", None) or exc).rstrip(".")
        raise AudioFileError(
            f"cannot decode audio file {path}: {reason}; "
            "use WAV, FLAC or OGG (convert with e.g. `ffmpeg -i IN -ac 1 OUT.wav`)"
        ) from None
    if samples.shape[0] == 0:
        raise AudioFileError(f"audio file {path} holds no audio (0 frames); record or export it again")
    return DecodedAudio(samples, rate, fmt, path)


_lock = threading.Lock()
_cache: OrderedDict[tuple[object, ...], np.ndarray] = OrderedDict()
_decoding: dict[tuple[object, ...], threading.Lock] = {}


def _key(resolved: Path, stat: os.stat_result, sample_rate: int) -> tuple[object, ...]:
    return (str(resolved), stat.st_mtime_ns, stat.st_size, stat.st_ino, int(sample_rate))


def load_pcm(path: str | os.PathLike[str], sample_rate: int) -> np.ndarray:
    """The file as int16 mono at `sample_rate` (8000..48000), read-only, ready to stream.

    Channels are averaged; the rate is converted with soxr HQ when it differs (time positions are
    kept: source sample k lands on round(k * sample_rate / file_rate)). Results are cached per
    (file identity on disk, sample_rate), so repeated and concurrent calls share one decode and
    one array, and a changed file is decoded again. Raises AudioFileError for a missing, empty or
    undecodable file, ValueError for a rate outside 8000..48000.
    """
    _pcm.check_rate(sample_rate)
    resolved = Path(path).expanduser().resolve()
    key = _key(resolved, _stat(resolved), sample_rate)
    with _lock:
        cached = _cache.get(key)
        if cached is not None:
            _cache.move_to_end(key)
            return cached
        decode_lock = _decoding.setdefault(key, threading.Lock())
    with decode_lock:  # concurrent first requests for one key wait here for a single decode
        try:
            with _lock:
                cached = _cache.get(key)
            if cached is not None:
                return cached
            decoded = read_audio(resolved)
            mono = _pcm.mono_float(decoded.samples)
            audio = _pcm.to_int16(_pcm.resample(mono, decoded.sample_rate, int(sample_rate)))
            audio.flags.writeable = False
            try:
                unchanged = _key(resolved, resolved.stat(), sample_rate) == key
            except OSError:
                unchanged = False
            if unchanged:  # not if the file was rewritten while we read it
                _store(key, audio)
            return audio
        finally:
            with _lock:
                _decoding.pop(key, None)


def _store(key: tuple[object, ...], audio: np.ndarray) -> None:
    with _lock:
        # Older versions of the same file at the same rate will never be asked for again.
        stale = [k for k in _cache if k[0] == key[0] and k[-1] == key[-1] and k != key]
        for k in stale:
            del _cache[k]
        _cache[key] = audio
        while len(_cache) > CACHE_ENTRIES:
            _cache.popitem(last=False)


def clear_cache() -> None:
    """Forget every decoded file (tests; or to free memory between runs)."""
    with _lock:
        _cache.clear()


def cache_size() -> int:
    """How many decoded arrays the cache holds."""
    with _lock:
        return len(_cache)


def speech_bounds_at(
    bounds_in_source_samples: tuple[int, int],
    source_rate: int,
    target_rate: int,
    *,
    target_length: int | None = None,
) -> tuple[int, int]:
    """Speech bounds (first sample, one past the last) at `source_rate`, converted to `target_rate`.

    Exact integer arithmetic: the start is rounded down and the end up, so the converted span
    always covers the speech. `target_length`, the length of the resampled clip (len of
    `load_pcm(...)`), caps both bounds so they never point past the audio.
    """
    start, end = bounds_in_source_samples
    for name, value in (("start", start), ("end", end)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise TypeError(f"speech bound {name} must be a whole number of samples, got {value!r}")
    _pcm.check_rate(source_rate)
    _pcm.check_rate(target_rate)
    start, end = int(start), int(end)
    if not 0 <= start <= end:
        raise ValueError(f"speech bounds must satisfy 0 <= start <= end, got ({start}, {end})")
    new_start = start * target_rate // source_rate
    new_end = -(-end * target_rate // source_rate)
    if target_length is not None:
        if target_length < 0:
            raise ValueError(f"target_length must be >= 0, got {target_length}")
        new_end = min(new_end, int(target_length))
        new_start = min(new_start, new_end)
    return new_start, new_end
