"""What the wire's audio means: s16le mono PCM, and where silence ends."""

from __future__ import annotations

import numpy as np

SAMPLE_WIDTH = 2
"""Bytes per sample: signed 16-bit little-endian, both directions."""

AUDIBLE_THRESHOLD = 32
"""A sample is non-silent above this magnitude (about -60 dBFS). TTFA ends at the first such
sample heard (METRICS.md); resampler ripple and dither in "silent" audio stay below it. The
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
        loud = np.flatnonzero((np.frombuffer(pcm, dtype="<u2") + AUDIBLE_OFFSET) > 2 * AUDIBLE_THRESHOLD)
        ends = np.cumsum(lengths)
        starts = ends - lengths
        lo = np.searchsorted(loud, starts)
        hi = np.searchsorted(loud, ends)
        last_at = np.maximum(hi - 1, 0)
        padded = np.append(loud, 0)  # lo may point one past the end when a frame has no loud sample
        firsts = (padded[lo] - starts).tolist()
        lasts = (padded[last_at] - starts).tolist()
        for j, i in enumerate(scan):
            if hi[j] > lo[j]:
                out[i] = (firsts[j], lasts[j])
    return out
