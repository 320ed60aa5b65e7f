"""What the wire's audio means: s16le mono PCM, and where silence ends."""

SAMPLE_WIDTH = 2
"""Bytes per sample: signed 16-bit little-endian, both directions."""

AUDIBLE_THRESHOLD = 32
"""A sample is non-silent above this magnitude (about -60 dBFS). TTFA ends at the first such
sample heard (METRICS.md); resampler ripple and dither in "silent" audio stay below it. The
client's listener and the server's ground truth both use this definition."""
