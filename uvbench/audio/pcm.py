"""Small PCM conversions shared by synthesis, bounds detection and the corpus.

Audio moves between int16 (what goes on the wire and into files) and float (what resampling
and level maths want). Keeping the conversions in one place keeps their scaling identical, so an
int16 clip converted to float and back is bit-exact.
"""

from __future__ import annotations

import numpy as np
import soxr

INT16_SCALE = 32768.0
"""Full scale of int16: float 1.0 is 0 dBFS."""

MIN_RATE = 8000
MAX_RATE = 48000


def check_rate(sample_rate: int) -> None:
    """Reject rates the rest of the tool has not been built for (8 kHz telephony .. 48 kHz)."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer):
        raise ValueError(f"sample rate must be a whole number of Hz, got {sample_rate!r}")
    if not MIN_RATE <= sample_rate <= MAX_RATE:
        raise ValueError(f"sample rate {sample_rate} Hz is outside {MIN_RATE}..{MAX_RATE} Hz")


def mono_float(pcm: np.ndarray) -> np.ndarray:
    """Mono float64 in [-1, 1] from mono (n,) or multi-channel (n, channels) int or float audio.

    Channels are averaged (soundfile's (frames, channels) layout). Integer audio is scaled by its
    type's full scale, so int16 32767 -> ~1.0; float audio is taken as already in [-1, 1].
    """
    x = np.asarray(pcm)
    if x.ndim == 2:
        x = x.mean(axis=1) if np.issubdtype(x.dtype, np.floating) else _int_to_float(x).mean(axis=1)
        return x.astype(np.float64, copy=False)
    if x.ndim != 1:
        raise ValueError(f"expected audio shaped (frames,) or (frames, channels), got {x.shape}")
    if np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float64, copy=False)
    return _int_to_float(x)


def _int_to_float(x: np.ndarray) -> np.ndarray:
    if not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"unsupported sample type {x.dtype}")
    return x.astype(np.float64) / float(2 ** (np.iinfo(x.dtype).bits - 1))


def to_int16(x: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1] to int16, rounding and clipping (resampling can overshoot 0 dBFS)."""
    return np.clip(np.round(np.asarray(x, dtype=np.float64) * INT16_SCALE), -32768, 32767).astype(np.int16)


def resample(x: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Mono float audio from in_rate to out_rate with soxr's high-quality filter.

    soxr.resample compensates its filter delay, so sample k at in_rate lines up with sample
    round(k * out_rate / in_rate) at out_rate: time positions survive the conversion.
    """
    x = np.asarray(x, dtype=np.float64)
    if in_rate == out_rate or x.size == 0:
        return x.copy()
    return np.asarray(soxr.resample(x, in_rate, out_rate, quality="HQ"), dtype=np.float64)
