"""Where the speech in a clean recording begins and ends, to the sample.

Metrics are anchored on these bounds (e.g. the stream time of the user's last speech sample), so
they must be exact on clean clips and within a couple of ms on clips with a quiet noise floor.
Two passes: a short-window RMS finds the loud part reliably, then a per-sample pass extends it
outwards through the quiet onset and decay that the RMS threshold misses.
"""

from __future__ import annotations

import numpy as np

from uvbench.audio.pcm import INT16_SCALE, mono_float

WINDOW_S = 0.005
"""RMS window: short enough to place an onset within a few ms, long enough to ignore a click."""

ABSOLUTE_FLOOR = 0.5 / INT16_SCALE
"""Anything below half an int16 step is digital silence (float clips carry resampler dust)."""

NOISE_FACTOR = 4.5
"""A sample must exceed this many noise RMS to count as speech, so background noise is never
mistaken for the first or last sample (Gaussian noise passes 4.5 sigma ~7 times per million)."""


def speech_bounds(
    pcm: np.ndarray, sample_rate: int, *, threshold_db: float = -45.0
) -> tuple[int, int] | None:
    """(first speech sample, one past the last) of a clip, or None if nothing reaches threshold.

    pcm: mono (frames,) or (frames, channels), int16 or float in [-1, 1]; channels are averaged.
    Speech is where the RMS over 5 ms exceeds `threshold_db` dBFS. The bounds then move outwards
    to the furthest samples above a floor (digital silence, or 4.5x the noise RMS measured in the
    clip's quietest windows) joined to the loud part by quiet runs shorter than one window.
    """
    x = mono_float(pcm)
    if x.size == 0:
        return None
    window = min(max(1, round(sample_rate * WINDOW_S)), x.size)
    power = _window_power(x, window)  # power[k] is the mean square of x[k : k + window]
    threshold = 10.0 ** (threshold_db / 20.0)
    loud = np.flatnonzero(power > threshold**2)
    if loud.size == 0:
        return None

    # The quietest tenth of the windows is the noise floor (zero for a padded clean clip).
    noise_rms = float(np.sqrt(max(np.percentile(power, 10), 0.0)))
    floor = min(max(ABSOLUTE_FLOOR, NOISE_FACTOR * noise_rms), threshold)
    above = np.flatnonzero(np.abs(x) > floor)

    # A loud window has a sample above the threshold, hence above the floor: these anchors exist.
    first_loud, last_loud = int(loud[0]), int(loud[-1])
    start_anchor = int(np.searchsorted(above, first_loud))  # first above-floor sample in window
    end_anchor = int(np.searchsorted(above, last_loud + window)) - 1  # last one in the window
    start = _extend(above, start_anchor, window, step=-1)
    end = _extend(above, end_anchor, window, step=1)
    return int(above[start]), int(above[end]) + 1


def _window_power(x: np.ndarray, window: int) -> np.ndarray:
    squares = np.concatenate(([0.0], np.cumsum(x * x)))
    power = (squares[window:] - squares[:-window]) / window
    return np.maximum(power, 0.0)  # cumsum differences can dip a hair below zero


def _extend(above: np.ndarray, index: int, max_gap: int, *, step: int) -> int:
    """Walk from above[index] along above-floor samples while consecutive ones are at most
    max_gap apart (a shorter run of quiet samples); return the index in `above` where it ends."""
    gaps = np.diff(above)
    if step < 0:
        breaks = np.flatnonzero(gaps[:index] > max_gap)  # gaps[i] sits between i and i+1
        return int(breaks[-1]) + 1 if breaks.size else 0
    breaks = np.flatnonzero(gaps[index:] > max_gap)
    return index + int(breaks[0]) if breaks.size else above.size - 1
