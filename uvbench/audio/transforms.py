"""Caller audio transforms: room noise, gain, telephone line, lossy codec, reverberation.

Sans-I/O: specs are frozen dataclasses, processing is numpy in and numpy out, at the call's input
rate (8000..48000 Hz, mono). The effects come from libraries (soxr for resampling, the stdlib's
`audioop` or `audioop-lts` for G.711, pedalboard for filters, GSM/MP3 and reverb), not hand DSP.

A `Chain` applies its transforms in order and splits the work so the pacer pays per chunk only what
must run over the stream:

- the **clip side** (`Chain.apply_clip`): every transform but `Noise`, applied to one whole clip.
  It depends on the clip alone, so it is computed once per clip per chain and cached.
- the **stream side** (`Chain.stream`): the noise bed, mixed over the whole call, silences included
  (a caller's room does not go quiet between turns). The transforms listed after the `Noise` (the
  phone line, a codec, a gain) are applied once to the noise loop when the stream is built, so each
  20 ms chunk costs one slice and one add: O(chunk) whatever the call's length.

Applying the line after the noise to speech and noise separately and summing is exact for the
linear parts (gain, band filter, reverb) and an approximation for the non-linear ones (G.711
companding, GSM/MP3 coding), which would see the sum in a real line: documented, and what keeps the
stream side free of per-chunk codec work and of codec latency.

Timing: no transform moves a sample. Resampling uses soxr's delay-compensated one-shot path, the
band filter runs forwards then backwards (zero phase), pedalboard compensates the latency its
codecs report, and the reverb keeps a dry path. A clip keeps its length, so its speech bounds
(`t_se`, the end of the clean speech) hold after any chain.

**SNR.** `Noise(snr_db=S)` sets the noise's RMS to `speech_rms / 10**(S / 20)`, where speech_rms is
the RMS of the speech as it reaches the noise in the chain (after the transforms listed before the
`Noise`), taken over each clip's exact speech bounds [speech_start_sample, speech_end_sample) from
the corpus manifest, pooled over the call's clips (`speech_rms`), and the noise's RMS is that of the
whole (looped, resampled) noise bed at the mixing point, before any transform listed after it.
"""

from __future__ import annotations

import copy
import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from uvbench.audio.pcm import INT16_SCALE, check_rate, mono_float, resample

if sys.version_info >= (3, 13):  # audioop left the stdlib in 3.13; audioop-lts is the same C code
    import audioop  # type: ignore[import-not-found]
else:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop

SNR_RANGE_DB = (-10.0, 60.0)
GAIN_RANGE_DB = (-40.0, 20.0)
MP3_VBR_RANGE = (0.0, 9.0)
LINE_RATE = 8000
HIGHPASS_HZ = 125.0
LOWPASS_HZ = 3400.0
LOOP_CROSSFADE_S = 0.5


def _check_range(what: str, value: float, limits: tuple[float, float], unit: str = "") -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what} must be a number, got {value!r}")
    low, high = limits
    if not low <= value <= high:
        raise ValueError(f"{what} {value:g}{unit} is outside {low:g}..{high:g}{unit}")
    return float(value)


def _fmt(value: float) -> str:
    return f"{value:g}"


# -- specs ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gain:
    """A level change in dB (-40..+20)."""

    db: float

    def __post_init__(self) -> None:
        _check_range("gain", self.db, GAIN_RANGE_DB, " dB")

    @property
    def label(self) -> str:
        return f"gain={_fmt(self.db)}dB"

    def apply(self, x: np.ndarray, rate: int) -> np.ndarray:
        return x * 10 ** (self.db / 20)


@dataclass(frozen=True)
class Telephone:
    """An 8 kHz phone line: telephone band (300..3400 Hz) and a G.711 round trip ("ulaw", "alaw"
    or None for the band alone). The signal is resampled to 8 kHz and back with soxr."""

    codec: str | None = "ulaw"

    def __post_init__(self) -> None:
        if self.codec not in ("ulaw", "alaw", None):
            raise ValueError(f"telephone codec {self.codec!r} is not one of 'ulaw', 'alaw' or none")

    @property
    def label(self) -> str:
        return self.codec or "phone-band"

    def apply(self, x: np.ndarray, rate: int) -> np.ndarray:
        line = resample(x, rate, LINE_RATE)
        line = _band(line, LINE_RATE)
        if self.codec is not None:
            line = g711_roundtrip(line, self.codec)
        return _fit(resample(line, LINE_RATE, rate), x.size)


@dataclass(frozen=True)
class Codec:
    """A lossy low-bitrate codec round trip through pedalboard.

    kind "gsm": GSM 06.10 full rate, 13 kbit/s at 8 kHz (its only bitrate; `vbr_quality` unused).
    kind "mp3": LAME VBR at `vbr_quality` 0 (best) .. 9 (smallest); pedalboard exposes VBR quality,
    not a bitrate.
    """

    kind: str = "gsm"
    vbr_quality: float | None = None

    def __post_init__(self) -> None:
        if self.kind == "gsm":
            if self.vbr_quality is not None:
                raise ValueError("codec gsm has one bitrate (13 kbit/s): remove vbr_quality")
        elif self.kind == "mp3":
            if self.vbr_quality is None:
                object.__setattr__(self, "vbr_quality", 6.0)
            _check_range("mp3 vbr_quality", self.vbr_quality, MP3_VBR_RANGE)
        else:
            raise ValueError(f"codec {self.kind!r} is not one of 'gsm', 'mp3'")

    @property
    def label(self) -> str:
        return "gsm-fr" if self.kind == "gsm" else f"mp3-v{_fmt(self.vbr_quality)}"

    def apply(self, x: np.ndarray, rate: int) -> np.ndarray:
        import pedalboard

        plugin = (
            pedalboard.GSMFullRateCompressor()
            if self.kind == "gsm"
            else pedalboard.MP3Compressor(vbr_quality=self.vbr_quality)
        )
        # reset=True: pedalboard pads and trims by the latency the plugin reports, so sample i stays i.
        y = plugin.process(x.astype(np.float32), float(rate), reset=True)
        return _fit(np.asarray(y, dtype=np.float64).reshape(-1), x.size)


@dataclass(frozen=True)
class Reverb:
    """Room reverberation (pedalboard's Freeverb-style Reverb): room_size 0..1, wet 0..1 (dry is
    1 - wet, so the direct sound keeps its timing). The tail is cut at the clip's end."""

    room_size: float = 0.5
    wet: float = 0.3

    def __post_init__(self) -> None:
        _check_range("reverb room_size", self.room_size, (0.0, 1.0))
        _check_range("reverb wet", self.wet, (0.0, 1.0))

    @property
    def label(self) -> str:
        return f"reverb={_fmt(self.room_size)}/{_fmt(self.wet)}"

    def apply(self, x: np.ndarray, rate: int) -> np.ndarray:
        import pedalboard

        plugin = pedalboard.Reverb(room_size=self.room_size, wet_level=self.wet, dry_level=1 - self.wet)
        y = plugin.process(x.astype(np.float32), float(rate), reset=True)
        return _fit(np.asarray(y, dtype=np.float64).reshape(-1), x.size)


@dataclass(frozen=True)
class Noise:
    """Background noise mixed at `snr_db` (-10..60 dB, defined in the module docstring) over the
    whole call. The source is a sound `file` or `samples` at `sample_rate`; it loops with a
    crossfaded seam. `seed` picks where in the loop the call starts (same seed, same bed)."""

    snr_db: float
    file: str | None = None
    samples: np.ndarray | None = field(default=None, compare=False, repr=False)
    sample_rate: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        _check_range("noise snr", self.snr_db, SNR_RANGE_DB, " dB")
        if (self.file is None) == (self.samples is None):
            raise ValueError("noise needs exactly one of file or samples")
        if self.samples is not None:
            if self.sample_rate is None:
                raise ValueError("noise samples need their sample_rate")
            check_rate(self.sample_rate)
            if np.asarray(self.samples).size < self.sample_rate // 10:
                raise ValueError("noise samples are shorter than 0.1 s: give at least 0.1 s of noise")

    @property
    def label(self) -> str:
        return f"snr={_fmt(self.snr_db)}dB"

    def source(self) -> tuple[np.ndarray, int]:
        """The noise as mono float and its rate."""
        if self.samples is not None:
            return mono_float(self.samples), int(self.sample_rate)
        import soundfile

        path = Path(self.file)
        if not path.is_file():
            raise ValueError(f"noise file {path} does not exist: give a WAV/FLAC path")
        data, rate = soundfile.read(str(path), always_2d=False)
        return mono_float(data), int(rate)

    def loop(self, rate: int) -> np.ndarray:
        """One period of the seamless noise loop at `rate`, at unit RMS."""
        x, source_rate = self.source()
        x = _crossfade_loop(x, int(LOOP_CROSSFADE_S * source_rate))
        # Resample three periods and keep the middle one: the filter sees the loop's own
        # neighbours at both ends, so the resampled period still wraps without a click.
        n = round(x.size * rate / source_rate)
        y = resample(np.tile(x, 3), source_rate, rate)
        y = y[n : 2 * n]
        level = float(np.sqrt(np.mean(y**2)))
        if level == 0.0:
            raise ValueError("noise is digital silence: give a noise with some level")
        return y / level


Transform = Gain | Telephone | Codec | Reverb | Noise


# -- chain ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rendered:
    """int16 audio and how many samples hit the int16 limits on the way out."""

    pcm: np.ndarray
    clipped: int


@dataclass(frozen=True)
class Chain:
    """Transforms applied in order; at most one `Noise`."""

    transforms: tuple[Transform, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "transforms", tuple(self.transforms))
        for t in self.transforms:
            if not isinstance(t, Gain | Telephone | Codec | Reverb | Noise):
                raise ValueError(f"chain item {t!r} is not a transform")
        if sum(isinstance(t, Noise) for t in self.transforms) > 1:
            raise ValueError("a chain mixes at most one noise: merge the noises into one file")

    @property
    def label(self) -> str:
        return "+".join(t.label for t in self.transforms) or "clean"

    @property
    def noise(self) -> Noise | None:
        return next((t for t in self.transforms if isinstance(t, Noise)), None)

    def _split(self) -> tuple[tuple[Transform, ...], tuple[Transform, ...]]:
        """The transforms before the noise and those after it (all of them before, without noise)."""
        for i, t in enumerate(self.transforms):
            if isinstance(t, Noise):
                return self.transforms[:i], self.transforms[i + 1 :]
        return self.transforms, ()

    def before_noise(self, pcm: np.ndarray, rate: int) -> np.ndarray:
        """The speech as it reaches the noise (float): what the SNR is measured against."""
        check_rate(rate)
        x = mono_float(pcm)
        for t in self._split()[0]:
            x = t.apply(x, rate)
        return x

    def render_clip(self, pcm: np.ndarray, rate: int) -> Rendered:
        """The clip side: every transform but the noise, on one whole clip; same length out."""
        x = self.before_noise(pcm, rate)
        for t in self._split()[1]:
            x = t.apply(x, rate)
        return _render(x)

    def apply_clip(self, pcm: np.ndarray, rate: int) -> np.ndarray:
        """`render_clip`'s int16 audio (cache it per clip per chain)."""
        return self.render_clip(pcm, rate).pcm

    def stream(self, rate: int, speech_level: float) -> Stream:
        """The stream side over one call: the noise bed at this chain's SNR against
        `speech_level` (the RMS from `speech_rms`), built once, then mixed chunk by chunk."""
        check_rate(rate)
        noise = self.noise
        if noise is None:
            return Stream(None, 0)
        if not speech_level > 0:
            raise ValueError(f"speech level {speech_level!r} must be above zero to set an SNR")
        bed = noise.loop(rate) * (speech_level / 10 ** (noise.snr_db / 20))
        after = self._split()[1]
        if after:
            # Three periods through the line, keep the middle one: filter and codec state at the
            # period's start is what the loop's own end leaves, so the processed loop still wraps.
            n = bed.size
            tiled = np.tile(bed, 3)
            for t in after:
                tiled = t.apply(tiled, rate)
            bed = tiled[n : 2 * n]
        return Stream(bed, loop_start(noise.seed, bed.size))


def loop_start(seed: int, loop_size: int) -> int:
    """Where in a noise loop of `loop_size` samples a call starts, drawn from `seed`."""
    return int(np.random.default_rng(seed).integers(loop_size))


def speech_rms(clips: Iterable[tuple[np.ndarray, int, int]]) -> float:
    """RMS over the exact speech bounds of one or more clips, pooled: (audio, speech_start_sample,
    speech_end_sample) each, bounds as in the corpus manifest (end excluded)."""
    energy, count = 0.0, 0
    for pcm, start, end in clips:
        x = mono_float(pcm)
        if not 0 <= start < end <= x.size:
            raise ValueError(f"speech bounds [{start}, {end}) do not fit a clip of {x.size} samples")
        energy += float(np.sum(x[start:end] ** 2))
        count += end - start
    if count == 0:
        raise ValueError("no clips given to measure the speech level")
    return math.sqrt(energy / count)


class Stream:
    """The stream side of a chain over one call: `process(chunk)` adds the next stretch of the
    noise bed to each chunk (clip-side output or silence) and returns int16; `clipped` counts
    samples that hit the int16 limits so far. Chunking does not change the output (the bed
    position carries over).

    The bed is quantized to integer samples once, so mixing it into a chunk is integer arithmetic:
    an add, a range check and a cast, a few microseconds per 20 ms chunk (the float mix it
    replaced cost ten times that on the pacing loop: docs/benchmarks.md). A chunk's samples are
    integers, so chunk + round(bed) is the rounded float sum, but for the bed's exact .5 values,
    which it rounds half to even on their own. A silent chunk (`silence`) is the bed itself."""

    def __init__(self, bed: np.ndarray | None, start: int) -> None:
        self._bed: np.ndarray | None = None
        self._bed16: np.ndarray | None = None
        self._bed_fits = True
        if bed is not None:
            scaled = np.round(np.asarray(bed, dtype=np.float64) * INT16_SCALE)
            self._bed = scaled.astype(np.int32)
            self._bed16 = np.clip(scaled, -32768, 32767).astype(np.int16)
            self._bed_fits = bool(np.array_equal(self._bed16, self._bed))
        self._pos = start
        self.clipped = 0

    @property
    def position(self) -> int:
        """Where in the loop the next chunk's noise starts."""
        return self._pos

    @property
    def loop_size(self) -> int:
        """Samples in the noise loop (0 without noise)."""
        return 0 if self._bed is None else self._bed.size

    @property
    def nbytes(self) -> int:
        """Memory the quantized bed holds (shared by the copies `at` makes)."""
        return 0 if self._bed is None else self._bed.nbytes + self._bed16.nbytes  # type: ignore[union-attr]

    def at(self, position: int) -> Stream:
        """A stream over the same (shared, never written) bed, from `position` in its loop, with
        nothing clipped yet: one call's, from a bed built once."""
        other = copy.copy(self)
        other._pos = position % self.loop_size if self.loop_size else 0
        other.clipped = 0
        return other

    def process(self, chunk: np.ndarray) -> np.ndarray:
        x = np.asarray(chunk)
        if x.dtype != np.int16:
            x = _render(mono_float(x)).pcm
        if self._bed is None:
            return x.copy()
        mixed = self._take(self._bed, x.size) + x
        if mixed.min() < -32768 or mixed.max() > 32767:
            self.clipped += int(np.count_nonzero((mixed > 32767) | (mixed < -32768)))
            np.clip(mixed, -32768, 32767, out=mixed)
        return mixed.astype(np.int16)

    def silence(self, n: int) -> np.ndarray:
        """`process` of `n` samples of silence: the bed itself, cut from its int16 copy."""
        if self._bed16 is None or not self._bed_fits:
            return self.process(np.zeros(n, dtype=np.int16))
        return self._take(self._bed16, n)

    def _take(self, bed: np.ndarray, n: int) -> np.ndarray:
        pos = self._pos
        end = pos + n
        if end <= bed.size:
            part = bed[pos:end]
        else:  # wraps (maybe more than once, for a chunk longer than the loop)
            part = np.take(bed, np.arange(pos, end) % bed.size)
        self._pos = end % bed.size
        return part


# -- helpers -------------------------------------------------------------------------------------


def g711_roundtrip(x: np.ndarray, codec: str) -> np.ndarray:
    """Float audio through G.711 encode and decode (codec "ulaw" or "alaw") at its own rate."""
    pcm = _to_int16(x).tobytes()
    if codec == "ulaw":
        back = audioop.ulaw2lin(audioop.lin2ulaw(pcm, 2), 2)
    elif codec == "alaw":
        back = audioop.alaw2lin(audioop.lin2alaw(pcm, 2), 2)
    else:
        raise ValueError(f"G.711 codec {codec!r} is not 'ulaw' or 'alaw'")
    return np.frombuffer(back, dtype=np.int16).astype(np.float64) / INT16_SCALE


def _band(x: np.ndarray, rate: int) -> np.ndarray:
    """Telephone band at the 8 kHz line rate, zero phase: three first-order high-passes at 125 Hz
    and one low-pass at 3400 Hz (pedalboard's filters are first order), run forwards then
    backwards so nothing is delayed and each slope doubles. Measured: 100 Hz -24 dB, 300 Hz -4 dB,
    1 kHz -0.5 dB, 3.4 kHz -6 dB; above 4 kHz the line has nothing (soxr's anti-alias filter)."""
    import pedalboard

    board = pedalboard.Pedalboard(
        [pedalboard.HighpassFilter(HIGHPASS_HZ) for _ in range(3)] + [pedalboard.LowpassFilter(LOWPASS_HZ)]
    )
    y = board.process(x.astype(np.float32), float(rate), reset=True)
    y = board.process(np.ascontiguousarray(y[::-1]), float(rate), reset=True)[::-1]
    return np.asarray(y, dtype=np.float64)


def _crossfade_loop(x: np.ndarray, fade: int) -> np.ndarray:
    """x made periodic: its tail fades into its head (equal power, for uncorrelated noise), so
    playing the result over and over has no seam. Length len(x) - fade."""
    fade = min(fade, x.size // 4)
    if fade < 1:
        return x.copy()
    out = x[: x.size - fade].copy()
    t = (np.arange(fade) + 0.5) / fade
    out[:fade] = x[:fade] * np.sin(0.5 * np.pi * t) + x[x.size - fade :] * np.cos(0.5 * np.pi * t)
    return out


def _fit(y: np.ndarray, n: int) -> np.ndarray:
    """Exactly n samples (resampling round trips can be one off)."""
    if y.size >= n:
        return y[:n]
    return np.concatenate([y, np.zeros(n - y.size)])


def _to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * INT16_SCALE), -32768, 32767).astype(np.int16)


def _render(x: np.ndarray) -> Rendered:
    scaled = np.round(np.asarray(x, dtype=np.float64) * INT16_SCALE)
    clipped = int(np.count_nonzero((scaled > 32767) | (scaled < -32768)))
    return Rendered(np.clip(scaled, -32768, 32767).astype(np.int16), clipped)


__all__ = [
    "Chain",
    "Codec",
    "Gain",
    "Noise",
    "Rendered",
    "Reverb",
    "Stream",
    "Telephone",
    "g711_roundtrip",
    "loop_start",
    "speech_rms",
]
