"""What the wire's audio means: s16le mono PCM, and where silence ends."""

from __future__ import annotations

import numpy as np

SAMPLE_WIDTH = 2
"""Bytes per sample: signed 16-bit little-endian, both directions."""

AUDIBLE_THRESHOLD = 32
"""A sample is non-silent above this magnitude (about -60 dBFS). TTFA ends at the first such
sample heard (docs/metrics.md); resampler ripple and dither in "silent" audio stay below it. The
client's listener and the server's ground truth both use this definition."""


AUDIBLE_OFFSET = np.uint16(AUDIBLE_THRESHOLD)


_ZEROS: dict[int, bytes] = {}
_SILENT = (-1, -1)


def _loud(frame: bytes, at: int) -> bool:
    x = frame[at] | frame[at + 1] << 8
    return AUDIBLE_THRESHOLD < x < 65536 - AUDIBLE_THRESHOLD


def _cheap_bounds(frame: bytes) -> tuple[int, int] | None:
    """The two cheap answers (agent frames, on the pacing loop): a frame loud at both ends (most
    frames inside speech), and a frame with no sample or of digital silence; None otherwise."""
    n = len(frame) >> 1
    if n and _loud(frame, 0) and _loud(frame, 2 * n - 2):
        return 0, n - 1
    zeros = _ZEROS.get(len(frame))
    if zeros is None:
        zeros = _ZEROS[len(frame)] = bytes(len(frame))
    if not n or frame == zeros:
        return _SILENT
    return None


def audible_bounds(frame: bytes) -> tuple[int, int]:
    """Index of the first and last sample with |x| > AUDIBLE_THRESHOLD in 16-bit PCM; (-1, -1) if none.

    The cheap answers first (`_cheap_bounds`). Otherwise in uint16 arithmetic x + T wraps so that
    |x| <= T maps to [0, 2T] and everything else above 2T (exact for every int16 value, -32768
    included): two vector operations, no int32 copy."""
    cheap = _cheap_bounds(frame)
    if cheap is not None:
        return cheap
    n = len(frame) >> 1
    loud = (np.frombuffer(frame, dtype="<u2", count=n) + AUDIBLE_OFFSET) > 2 * AUDIBLE_THRESHOLD
    first = int(loud.argmax())
    if not loud[first]:
        return _SILENT
    return first, n - 1 - int(loud[::-1].argmax())


def audible_bounds_of(frames: list[bytes]) -> list[tuple[int, int]]:
    """`audible_bounds` of each frame, the frames that need a scan scanned together: one pass of
    vector operations over all of them instead of a few per frame."""
    out: list[tuple[int, int]] = []
    scan: list[int] = []
    for i, frame in enumerate(frames):
        cheap = _cheap_bounds(frame)
        out.append(_SILENT if cheap is None else cheap)
        if cheap is None:
            scan.append(i)
    if len(scan) == 1:
        out[scan[0]] = audible_bounds(frames[scan[0]])
    elif scan:
        lengths = [len(frames[i]) >> 1 for i in scan]
        pcm = b"".join(frames[i] if not len(frames[i]) & 1 else frames[i][:-1] for i in scan)
        ends = np.cumsum(lengths)
        firsts, lasts = audible_spans(pcm, ends - lengths, ends)
        for i, first, last in zip(scan, firsts.tolist(), lasts.tolist(), strict=True):
            if first >= 0:
                out[i] = (first, last)
    return out


def audible_spans(pcm: bytes, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For frames lying at samples [starts[i], ends[i]) of `pcm` (s16le, frames in order, back to
    back), the first and last audible sample of each relative to its start, -1 for a frame with
    none."""
    loud = (np.frombuffer(pcm, dtype="<u2") + AUDIBLE_OFFSET) > 2 * AUDIBLE_THRESHOLD
    count = len(starts)
    n = int(ends[0] - starts[0]) if count else 0
    if n and len(loud) == count * n and bool(np.all(ends - starts == n)):  # one size: a matrix
        rows = loud.reshape(count, n)
        first = rows.argmax(axis=1)
        has = rows[np.arange(count), first]
        last = n - 1 - rows[:, ::-1].argmax(axis=1)
        return np.where(has, first, -1), np.where(has, last, -1)
    # Frames of several sizes: the loud samples' positions, and each frame's share of them.
    at = np.flatnonzero(loud)
    lo = np.searchsorted(at, starts)
    hi = np.searchsorted(at, ends)
    padded = np.append(at, 0)  # lo may point one past the end when a frame has no loud sample
    has = hi > lo
    first = np.where(has, padded[lo] - starts, -1)
    last = np.where(has, padded[np.maximum(hi - 1, 0)] - starts, -1)
    return first, last
