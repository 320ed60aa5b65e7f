"""Background noises for realistic callers: the shipped noise corpus (audio_corpus/noise/).

Six loopable noises, made here and deterministic (seeded): pink and brown noise, a 50 Hz mains
hum, babble of eight synthesized talkers, a café (babble, glass clinks and pink noise) and a
street (brown rumble, passing cars and horns). Each is 16 kHz mono, 12 s, at an RMS of -30 dBFS
and stored as 16-bit FLAC next to its own manifest.json (not the speech corpus's: its entries
have no speech bounds). Rebuild them with `uvbench corpus noise` (or
`python -m uvbench.audio.noise`).

Seamless loops: every generator builds its signal circularly, so the last sample runs into the
first as any two neighbouring samples do. Coloured noise is shaped in the FFT domain (periodic by
construction), the hum has a whole number of cycles, and events (words, clinks, cars, horns) are
placed modulo the length, so one that starts near the end finishes at the start. A file of your
own that does not loop can be made to with `crossfade_loop`.

dBFS here is 20 log10(RMS) with full scale 1.0 (int16 32768), over the whole file with the
channels averaged: a full-scale sine is -3 dBFS.

Reproducing the files: pink, brown, hum and street are pure numpy and regenerate sample for sample
(within 1 LSB on another CPU, whose FFT may round differently).
Babble and café also depend on eSpeak NG, whose pitch flutter depends on everything the process
has spoken before (see `uvbench.audio._espeak`): they reproduce the shipped samples only in a
fresh process, with the same espeakng-loader release, that speaks nothing before them.

Your own noises: put WAV or FLAC files in a folder with a manifest.json listing them, e.g.
`[{"file": "office.flac", "kind": "office"}]`; see `NoiseEntry` for the fields and
`load_noise_manifest` for the checks.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from uvbench.audio import pcm as _pcm
from uvbench.audio.tts import synthesize

__all__ = [
    "NOISE_DIR",
    "NOISES",
    "NoiseEntry",
    "NoiseManifestError",
    "NoiseSpec",
    "babble",
    "babble_tracks",
    "brown_noise",
    "build_noise_corpus",
    "cafe",
    "crossfade_loop",
    "hum",
    "load_noise",
    "load_noise_manifest",
    "noise_level_dbfs",
    "pink_noise",
    "render",
    "rms_dbfs",
    "street",
    "write_noise_manifest",
]

NOISE_DIR = Path(__file__).resolve().parents[2] / "audio_corpus" / "noise"
MANIFEST_NAME = "manifest.json"
SAMPLE_RATE = 16000
DURATION_S = 12.0
"""A whole number of 50 Hz cycles, and long enough that a listener does not hear the loop."""
RMS_DBFS = -30.0
"""Low enough that the loudest event (a clink, a horn) stays far from clipping; the mixer sets
the level it wants (an SNR) from this anyway."""
COLOURED_LOW_HZ = 20.0
"""Below this, pink and brown noise are flat: their 1/f and 1/f^2 slopes would otherwise put most
of the file's power into an inaudible sub-20 Hz drift and leave little for the audible band."""


class NoiseManifestError(ValueError):
    """A noise manifest that cannot be used; the message is one line: what, where, how to fix it."""


# --- measuring -----------------------------------------------------------------------------------


def rms_dbfs(samples: np.ndarray) -> float:
    """RMS level in dBFS of int or float audio, mono (n,) or (n, channels) (channels averaged)."""
    x = _pcm.mono_float(samples)
    if x.size == 0:
        raise ValueError("no samples to measure")
    rms = math.sqrt(float(np.mean(x * x)))
    return 20.0 * math.log10(rms) if rms > 0 else -math.inf


def _normalise(x: np.ndarray, level_dbfs: float) -> np.ndarray:
    return x * (10.0 ** (level_dbfs / 20.0) / math.sqrt(float(np.mean(x * x))))


def crossfade_loop(samples: np.ndarray, sample_rate: int, fade_s: float = 0.5) -> np.ndarray:
    """`samples` made loopable by fading its last `fade_s` into its start (equal power, for
    uncorrelated material such as noise); the result is `fade_s` shorter. For files of your own:
    the shipped noises loop by construction."""
    x = np.asarray(samples, dtype=np.float64)
    fade = round(fade_s * sample_rate)
    if not 0 < fade <= x.shape[0] // 2:
        raise ValueError(
            f"a {fade_s} s crossfade needs at least twice that much audio ({x.shape[0]} samples)"
        )
    ramp = (np.arange(fade) + 0.5) / fade
    fade_in, fade_out = np.sin(ramp * np.pi / 2), np.cos(ramp * np.pi / 2)
    if x.ndim == 2:
        fade_in, fade_out = fade_in[:, None], fade_out[:, None]
    out = x[: x.shape[0] - fade].copy()
    # The tail's last sample was followed by x[n - fade], which is where `out` now ends: so the
    # loop point joins two samples that were neighbours in the original.
    out[:fade] = x[:fade] * fade_in + x[x.shape[0] - fade :] * fade_out
    return out


# --- generators (float64 mono, circular, normalised to `level_dbfs`) --------------------------------


def _frames(sample_rate: int, duration_s: float) -> int:
    _pcm.check_rate(sample_rate)
    n = round(duration_s * sample_rate)
    if n < sample_rate // 10:
        raise ValueError(f"duration {duration_s} s is too short for a noise (at least 0.1 s)")
    return n


def _shaped(
    n: int, sample_rate: int, rng: np.random.Generator, gain: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """White Gaussian noise filtered in the FFT domain by `gain(frequency)` (an amplitude gain).

    Filtering the whole signal as one period makes it exactly periodic, hence seamless to loop.
    """
    spectrum = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    spectrum *= gain(np.fft.rfftfreq(n, 1.0 / sample_rate))
    spectrum[0] = 0.0
    return np.fft.irfft(spectrum, n)


def _power_law(exponent: float, low_hz: float = COLOURED_LOW_HZ) -> Callable[[np.ndarray], np.ndarray]:
    """Power per Hz proportional to f^-exponent above `low_hz` (amplitude f^(-exponent/2))."""
    return lambda f: np.maximum(f, low_hz) ** (-exponent / 2.0)


def pink_noise(
    seed: int, *, sample_rate: int = SAMPLE_RATE, duration_s: float = DURATION_S, level_dbfs: float = RMS_DBFS
) -> np.ndarray:
    """Pink noise: power per Hz falls as 1/f (-3.01 dB per octave) from 20 Hz to Nyquist."""
    n = _frames(sample_rate, duration_s)
    return _normalise(_shaped(n, sample_rate, np.random.default_rng(seed), _power_law(1.0)), level_dbfs)


def brown_noise(
    seed: int, *, sample_rate: int = SAMPLE_RATE, duration_s: float = DURATION_S, level_dbfs: float = RMS_DBFS
) -> np.ndarray:
    """Brown (red) noise: power per Hz falls as 1/f^2 (-6.02 dB per octave) from 20 Hz to Nyquist."""
    n = _frames(sample_rate, duration_s)
    return _normalise(_shaped(n, sample_rate, np.random.default_rng(seed), _power_law(2.0)), level_dbfs)


HUM_HARMONICS = (1.0, 0.55, 0.4, 0.22, 0.18, 0.1, 0.08, 0.05, 0.04, 0.03)
"""Amplitude of the mains frequency and its harmonics (50, 100, 150 Hz, ...): falling, with the
odd ones a little stronger, as transformer and ballast buzz has them."""
HUM_NOISE_DB = -26.0
"""Pink noise under the hum, relative to it: a little hiss, so it is not a pure synthetic tone."""


def hum(
    seed: int,
    *,
    mains_hz: float = 50.0,
    sample_rate: int = SAMPLE_RATE,
    duration_s: float = DURATION_S,
    level_dbfs: float = RMS_DBFS,
) -> np.ndarray:
    """Mains hum: `mains_hz` and its harmonics (random phases) over a little pink noise.

    Loops seamlessly when `duration_s` holds a whole number of cycles (12 s of 50 or 60 Hz does).
    """
    n = _frames(sample_rate, duration_s)
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sample_rate
    tone = np.zeros(n)
    for k, amplitude in enumerate(HUM_HARMONICS, start=1):
        if k * mains_hz < sample_rate / 2:
            tone += amplitude * np.sin(2 * np.pi * k * mains_hz * t + rng.uniform(0, 2 * np.pi))
    hiss = _normalise(_shaped(n, sample_rate, rng, _power_law(1.0)), rms_dbfs(tone) + HUM_NOISE_DB)
    return _normalise(tone + hiss, level_dbfs)


BABBLE_LINES = (
    "The weather has been lovely this week and we finally went down to the market.",
    "I told him the meeting was moved to Thursday but he never reads his email.",
    "Could you pass me the menu, I think they changed the specials again.",
    "My sister is flying in on Friday so the whole weekend is already booked.",
    "We should really fix the garden fence before the winter storms arrive.",
    "Honestly the second film was better than the first one, the ending surprised me.",
    "They opened a new bakery around the corner and the bread is amazing.",
    "I have been trying to learn the guitar but my fingers still hurt.",
    "The train was late again this morning, I waited almost forty minutes.",
    "Did you hear that the library is going to stay open later on weekdays?",
    "She said the apartment has a big kitchen but the rent is far too high.",
    "If we leave at seven we can still catch the beginning of the concert.",
)
"""Everyday lines; talkers speak different ones, so overlapping words never line up."""

BABBLE_TALKERS = (
    ("en-us", 170),
    ("en-us+f1", 185),
    ("en-gb-x-rp+m3", 160),
    ("en-us+Annie", 175),
    ("en-gb-scotland+m7", 165),
    ("en-029+f4", 180),
    ("en-us+m1", 195),
    ("en-gb-x-rp+belinda", 170),
)
"""(eSpeak NG voice, words per minute) per talker: mixed voices, pitches and rates. No variant
with breathiness (f2, f3, f5, klatt, whisper, ...): eSpeak NG draws its breath noise from an
unseeded source, so those voices differ on every run and the files could not be reproduced."""

_LINES_PER_TALKER = 4
BABBLE_GAP_S = (0.15, 0.6)
"""Pause between one talker's sentences (uniform range); the leftover time is spread over them."""
BABBLE_GAIN_DB = 4.0
"""Talkers' levels differ by up to this much either way, as people at different distances do."""


def _talker_lines(index: int) -> list[str]:
    return [BABBLE_LINES[(3 * index + j) % len(BABBLE_LINES)] for j in range(_LINES_PER_TALKER)]


def _spoken_lines(sample_rate: int) -> list[list[np.ndarray]]:
    """Every talker's lines, each at unit RMS, rendered in one fixed order whatever the caller.

    Fixed order, no seed: eSpeak NG's output depends on what the process spoke before, so babble
    and café both render exactly this sequence (café then reuses the cache) and a fresh process
    reproduces the shipped files whichever of the two it builds first.
    """
    talkers = []
    for index, (voice, wpm) in enumerate(BABBLE_TALKERS):
        lines = []
        for text in _talker_lines(index):
            speech = _pcm.mono_float(synthesize(text, sample_rate, wpm=wpm, voice=voice).pcm)
            lines.append(speech / math.sqrt(float(np.mean(speech * speech))))
        talkers.append(lines)
    return talkers


def babble_tracks(
    seed: int,
    *,
    sample_rate: int = SAMPLE_RATE,
    duration_s: float = DURATION_S,
    talkers: int = len(BABBLE_TALKERS),
) -> list[np.ndarray]:
    """One track per talker, each `duration_s` long: as many of its sentences as fit, seeded pauses
    between them, a seeded level, rotated to a seeded offset (circularly, so each loops)."""
    n = _frames(sample_rate, duration_s)
    if not 1 <= talkers <= len(BABBLE_TALKERS):
        raise ValueError(f"talkers must be 1..{len(BABBLE_TALKERS)}, got {talkers}")
    rng = np.random.default_rng(seed)
    tracks = []
    for lines in _spoken_lines(sample_rate)[:talkers]:
        order = rng.permutation(len(lines))
        min_gap = round(BABBLE_GAP_S[0] * sample_rate)
        chosen: list[np.ndarray] = []
        used = 0
        for i in order:
            if used + len(lines[i]) + min_gap <= n:
                chosen.append(lines[i])
                used += len(lines[i]) + min_gap
        # The leftover silence goes to the pauses in random shares; each line is followed by its
        # pause, so the track ends in silence and its wrap point falls between two sentences.
        weights = rng.uniform(*BABBLE_GAP_S, size=len(chosen))
        extra = np.floor(weights / weights.sum() * (n - used)).astype(int)
        track = np.zeros(n)
        at = 0
        for line, pad in zip(chosen, extra, strict=True):
            track[at : at + len(line)] = line
            at += len(line) + min_gap + int(pad)
        gain = 10.0 ** (rng.uniform(-BABBLE_GAIN_DB, BABBLE_GAIN_DB) / 20.0)
        tracks.append(np.roll(track * gain, int(rng.integers(n))))
    return tracks


def babble(
    seed: int, *, sample_rate: int = SAMPLE_RATE, duration_s: float = DURATION_S, level_dbfs: float = RMS_DBFS
) -> np.ndarray:
    """Babble: eight synthesized talkers (different voices, rates and sentences) at random offsets.

    With this many voices at once no single word stands out, as in a crowded room.
    """
    mix = np.sum(babble_tracks(seed, sample_rate=sample_rate, duration_s=duration_s), axis=0)
    return _normalise(mix, level_dbfs)


def _place(buffer: np.ndarray, event: np.ndarray, start: int) -> None:
    """Add `event` into `buffer` at `start`, wrapping past the end to the beginning."""
    np.add.at(buffer, (start + np.arange(len(event))) % len(buffer), event)


CAFE_CLINKS_PER_S = 0.8
CAFE_PINK_DB = -14.0
"""Pink noise under a café's babble (ventilation, street through the windows), relative to it."""


def _clink(sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Glass or cup struck: a few inharmonic partials (ratios of a struck bar) that die out fast."""
    base = rng.uniform(1800.0, 3600.0)
    tau = rng.uniform(0.03, 0.1)
    t = np.arange(round(6 * tau * sample_rate)) / sample_rate
    out = np.zeros_like(t)
    for ratio, amplitude in ((1.0, 1.0), (2.76, 0.5), (5.4, 0.25)):
        if base * ratio < 0.45 * sample_rate:
            out += (
                amplitude
                * np.sin(2 * np.pi * base * ratio * t + rng.uniform(0, 2 * np.pi))
                * np.exp(-t * ratio / tau)
            )
    return out * np.minimum(1.0, t * sample_rate / 8)  # an 8-sample attack: a strike, not a click


def cafe(
    seed: int, *, sample_rate: int = SAMPLE_RATE, duration_s: float = DURATION_S, level_dbfs: float = RMS_DBFS
) -> np.ndarray:
    """Café: babble, glass and cup clinks (short decaying tones, random times and levels) and a
    little pink noise."""
    n = _frames(sample_rate, duration_s)
    rng = np.random.default_rng(seed)
    voices = np.sum(
        babble_tracks(int(rng.integers(2**31)), sample_rate=sample_rate, duration_s=duration_s), axis=0
    )
    voices = _normalise(voices, 0.0)
    room = _normalise(_shaped(n, sample_rate, rng, _power_law(1.0)), CAFE_PINK_DB)
    clinks = np.zeros(n)
    for _ in range(max(1, round(CAFE_CLINKS_PER_S * duration_s))):
        # Peaks 0..+8 dB over the babble's RMS: heard clearly, without dominating the level.
        level = 10.0 ** (rng.uniform(0.0, 8.0) / 20.0)
        _place(clinks, level * _clink(sample_rate, rng), int(rng.integers(n)))
    return _normalise(voices + room + clinks, level_dbfs)


STREET_CARS_PER_S = 0.4
STREET_HORNS = 2
STREET_HORN_HZ = (420.0, 523.0)
"""A two-tone car horn: the usual pair roughly a major third apart."""


def _horn(sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    length = rng.uniform(0.25, 0.7)
    t = np.arange(round(length * sample_rate)) / sample_rate
    out = np.zeros_like(t)
    for f in STREET_HORN_HZ:
        for k in range(1, 8):  # a horn's buzzy, harmonic-rich tone
            if k * f < 0.45 * sample_rate:
                out += np.sin(2 * np.pi * k * f * t) / k
    attack, release = 0.02 * sample_rate, 0.06 * sample_rate
    envelope = np.minimum(1.0, np.minimum(np.arange(len(t)) / attack, (len(t) - np.arange(len(t))) / release))
    return out * envelope


def street(
    seed: int, *, sample_rate: int = SAMPLE_RATE, duration_s: float = DURATION_S, level_dbfs: float = RMS_DBFS
) -> np.ndarray:
    """Street: brown-noise rumble, passing cars (band-limited noise swelling and fading over a few
    seconds as a car approaches and leaves) and a couple of distant two-tone horns."""
    n = _frames(sample_rate, duration_s)
    rng = np.random.default_rng(seed)
    rumble = _normalise(_shaped(n, sample_rate, rng, _power_law(2.0)), 0.0)
    cars = np.zeros(n)
    offsets = (np.arange(n) + 0.5) - n / 2  # sample distance from the middle, for circular envelopes
    for _ in range(max(1, round(STREET_CARS_PER_S * duration_s))):
        corner = rng.uniform(600.0, 1500.0)
        # Tyre and engine noise: pinkish, rolled off above `corner` Hz.
        tyre = _shaped(n, sample_rate, rng, lambda f, c=corner: _power_law(1.0)(f) / (1.0 + (f / c) ** 4))
        tyre = _normalise(tyre, 0.0)
        # Power falls with the square of the distance to a car passing at `closest` metres.
        speed, closest = rng.uniform(8.0, 16.0), rng.uniform(3.0, 10.0)
        distance = np.hypot(offsets / sample_rate * speed, closest)
        swell = np.roll((closest / distance), int(rng.integers(n)) - n // 2)
        cars += 10.0 ** (rng.uniform(2.0, 8.0) / 20.0) * tyre * swell
    horns = np.zeros(n)
    for _ in range(STREET_HORNS):
        _place(horns, 10.0 ** (rng.uniform(-4.0, 2.0) / 20.0) * _horn(sample_rate, rng), int(rng.integers(n)))
    return _normalise(rumble + cars + horns, level_dbfs)


# --- the shipped corpus --------------------------------------------------------------------------


@dataclass(frozen=True)
class NoiseSpec:
    """One shipped noise: how to make it and what its manifest entry says about it."""

    file: str
    kind: str
    description: str
    seed: int
    make: Callable[..., np.ndarray]


NOISES: tuple[NoiseSpec, ...] = (
    NoiseSpec("pink.flac", "pink", "Pink noise, -3 dB per octave (power 1/f) from 20 Hz", 101, pink_noise),
    NoiseSpec(
        "brown.flac", "brown", "Brown noise, -6 dB per octave (power 1/f^2) from 20 Hz", 102, brown_noise
    ),
    NoiseSpec("hum.flac", "hum", "50 Hz mains hum and harmonics over a little pink noise", 103, hum),
    NoiseSpec(
        "babble.flac", "babble", "Eight overlapping synthesized talkers, no word intelligible", 104, babble
    ),
    NoiseSpec("cafe.flac", "cafe", "Café: babble, glass and cup clinks, pink room noise", 105, cafe),
    NoiseSpec("street.flac", "street", "Street: brown rumble, passing cars, two distant horns", 106, street),
)


def render(spec: NoiseSpec, *, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The noise as the shipped file holds it: int16 mono, DURATION_S long, at RMS_DBFS."""
    audio = _pcm.to_int16(
        spec.make(spec.seed, sample_rate=sample_rate, duration_s=DURATION_S, level_dbfs=RMS_DBFS)
    )
    audio.flags.writeable = False
    return audio


# --- manifest ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoiseEntry:
    """One entry of a noise manifest (audio_corpus/noise/manifest.json or a folder of your own).

    file: path of a WAV or FLAC file (any rate, any channels), relative to the manifest's folder.
    kind: what it sounds like, one word ("pink", "babble", "office", ...); scenarios may name it.
    description: free text. sample_rate, duration_s: the file's, checked against it when given.
    rms_dbfs: its level (see the module docstring); when absent, measured from the file when
    needed (`noise_level_dbfs`). seed: what generated it, null for recordings. loop: whether its
    end runs seamlessly into its start (false: make it loop with `crossfade_loop`).
    Only `file` and `kind` are required; `path` is where the file is, not a manifest field.
    """

    file: str
    kind: str
    path: Path
    description: str = ""
    sample_rate: int | None = None
    duration_s: float | None = None
    rms_dbfs: float | None = None
    seed: int | None = None
    loop: bool = False

    def to_entry(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "kind": self.kind,
            "description": self.description,
            "sample_rate": self.sample_rate,
            "duration_s": self.duration_s,
            "rms_dbfs": self.rms_dbfs,
            "seed": self.seed,
            "loop": self.loop,
        }


_REQUIRED = ("file", "kind")
_OPTIONAL = ("description", "sample_rate", "duration_s", "rms_dbfs", "seed", "loop")
_DURATION_TOLERANCE_S = 0.001


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


_CHECKS: dict[str, tuple[Callable[[object], bool], str]] = {
    "file": (lambda v: isinstance(v, str) and bool(v.strip()), "a non-empty file name"),
    "kind": (lambda v: isinstance(v, str) and bool(v.strip()), 'a non-empty word such as "babble"'),
    "description": (lambda v: isinstance(v, str), "text"),
    "sample_rate": (lambda v: v is None or (_is_int(v) and v > 0), "a whole number of Hz or null"),
    "duration_s": (lambda v: v is None or (_is_number(v) and v > 0), "a number of seconds > 0 or null"),
    "rms_dbfs": (lambda v: v is None or (_is_number(v) and v <= 0), "a number of dBFS <= 0 or null"),
    "seed": (lambda v: v is None or _is_int(v), "a whole number or null"),
    "loop": (lambda v: isinstance(v, bool), "true or false"),
}


def load_noise_manifest(directory: str | os.PathLike[str] = NOISE_DIR) -> dict[str, NoiseEntry]:
    """The folder's noises keyed by file name, in manifest order. Raises NoiseManifestError (one
    line naming the manifest, the entry and the fix) for unreadable JSON, an unknown or missing
    field, a value of the wrong type, a duplicate or missing file, or a sample_rate/duration_s
    that the file contradicts."""
    directory = Path(directory)
    where = directory / MANIFEST_NAME
    try:
        entries = json.loads(where.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NoiseManifestError(
            f"no noise manifest at {where}; create one listing the noise files"
        ) from None
    except OSError as exc:
        raise NoiseManifestError(f"cannot read {where}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise NoiseManifestError(
            f"{where} is not valid JSON ({' '.join(str(exc).split())}); fix it"
        ) from None
    if not isinstance(entries, list):
        raise NoiseManifestError(f"{where} must hold a JSON list of entries, got {type(entries).__name__}")
    noises: dict[str, NoiseEntry] = {}
    for i, entry in enumerate(entries):
        noise = _parse_entry(entry, f"{where}: entry {i}", directory)
        if noise.file in noises:
            raise NoiseManifestError(
                f"{where}: entry {i} lists {noise.file!r} again; keep one entry per file"
            )
        noises[noise.file] = noise
    return noises


def _parse_entry(entry: object, where: str, directory: Path) -> NoiseEntry:
    if not isinstance(entry, dict):
        raise NoiseManifestError(f'{where} must be an object with a "file" field, got {type(entry).__name__}')
    if isinstance(entry.get("file"), str):
        where = f"{where} ({entry['file']})"
    unknown = sorted(set(entry) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise NoiseManifestError(
            f"{where} has unknown field(s) {', '.join(unknown)}; allowed: {', '.join(_REQUIRED + _OPTIONAL)}"
        )
    missing = [name for name in _REQUIRED if name not in entry]
    if missing:
        raise NoiseManifestError(f"{where} lacks {' and '.join(missing)}; every entry needs file and kind")
    for name, value in entry.items():
        check, expected = _CHECKS[name]
        if not check(value):
            raise NoiseManifestError(f"{where}: {name} must be {expected}, got {value!r}")
    path = directory / entry["file"]
    if not path.is_file():
        raise NoiseManifestError(f"{where}: no such file {path}; fix the name or add the file")
    noise = NoiseEntry(**entry, path=path)
    if noise.sample_rate is not None or noise.duration_s is not None:
        try:
            info = sf.info(str(path))
        except (sf.SoundFileError, RuntimeError) as exc:
            raise NoiseManifestError(
                f"{where}: cannot decode {path} ({' '.join(str(exc).split())}); use a WAV or FLAC file"
            ) from None
        if noise.sample_rate is not None and noise.sample_rate != info.samplerate:
            raise NoiseManifestError(
                f"{where}: sample_rate says {noise.sample_rate} but the file is {info.samplerate} Hz; "
                "fix or drop it"
            )
        actual = info.frames / info.samplerate
        if noise.duration_s is not None and abs(noise.duration_s - actual) > _DURATION_TOLERANCE_S:
            raise NoiseManifestError(
                f"{where}: duration_s says {noise.duration_s} but the file lasts {actual:.3f} s; "
                "fix or drop it"
            )
    return noise


def write_noise_manifest(noises: list[NoiseEntry], directory: str | os.PathLike[str] = NOISE_DIR) -> Path:
    """Write the manifest for `noises` (in the given order); returns its path."""
    path = Path(directory) / MANIFEST_NAME
    text = json.dumps([noise.to_entry() for noise in noises], indent=2, ensure_ascii=False)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def load_noise(noise: NoiseEntry, sample_rate: int) -> np.ndarray:
    """The noise as float64 mono in [-1, 1] at `sample_rate` (channels averaged, soxr HQ)."""
    _pcm.check_rate(sample_rate)
    data, file_rate = sf.read(str(noise.path), dtype="float64", always_2d=True)
    return _pcm.resample(_pcm.mono_float(data), int(file_rate), sample_rate)


def noise_level_dbfs(noise: NoiseEntry) -> float:
    """The manifest's rms_dbfs, or else the file's RMS measured as stored (whole file, channels
    averaged, at its own rate)."""
    if noise.rms_dbfs is not None:
        return noise.rms_dbfs
    data, _ = sf.read(str(noise.path), dtype="float64", always_2d=True)
    return rms_dbfs(data)


def build_noise_corpus(out_dir: str | os.PathLike[str] = NOISE_DIR) -> list[NoiseEntry]:
    """Render every shipped noise into `out_dir` as 16-bit FLAC and write its manifest.json.

    Run in a fresh process to reproduce the shipped babble and café (see the module docstring).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    noises = []
    for spec in NOISES:
        audio = render(spec)
        path = out_dir / spec.file
        sf.write(str(path), audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        noises.append(
            NoiseEntry(
                file=spec.file,
                kind=spec.kind,
                path=path,
                description=spec.description,
                sample_rate=SAMPLE_RATE,
                duration_s=round(len(audio) / SAMPLE_RATE, 6),
                rms_dbfs=RMS_DBFS,
                seed=spec.seed,
                loop=True,
            )
        )
    write_noise_manifest(noises, out_dir)
    return noises


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build the noise corpus (audio_corpus/noise/).")
    parser.add_argument("--out", type=Path, default=NOISE_DIR, help="noise corpus directory")
    args = parser.parse_args(argv)
    for noise in build_noise_corpus(args.out):
        size = noise.path.stat().st_size
        print(f"{noise.file}: {noise.duration_s:.1f} s, {noise.rms_dbfs:g} dBFS, {size / 1024:.0f} KB")
    print(f"wrote {len(NOISES)} noises and manifest.json to {args.out}")


if __name__ == "__main__":
    main()
