"""The server-side recording of a call: a stereo WAV, left the user's audio as received, right the
agent's audio as the server's playback model says the client heard it, on one timeline."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import soundfile as sf
import soxr


class Segment(Protocol):
    start_ns: int
    pcm: bytes


def build_recording(
    input_pcm: bytes,
    input_rate: int,
    origin_ns: int,
    agent_segments: Sequence[Segment],
    output_rate: int,
) -> bytes:
    """WAV bytes at the input rate; `origin_ns` is when the first input sample arrived."""
    user = np.frombuffer(input_pcm, dtype="<i2")
    placed: list[tuple[int, np.ndarray]] = []
    length = user.size
    for seg in agent_segments:
        audio = np.frombuffer(seg.pcm, dtype="<i2")
        if audio.size == 0:
            continue
        if output_rate != input_rate:
            audio = soxr.resample(audio.astype(np.float32) / 32768.0, output_rate, input_rate, quality="HQ")
            audio = np.clip(np.round(audio * 32768.0), -32768, 32767).astype(np.int16)
        offset = max(0, round((seg.start_ns - origin_ns) / 1e9 * input_rate))
        placed.append((offset, audio))
        length = max(length, offset + audio.size)
    stereo = np.zeros((length, 2), dtype=np.int16)
    stereo[: user.size, 0] = user
    for offset, audio in placed:
        stereo[offset : offset + audio.size, 1] = audio
    buffer = io.BytesIO()
    sf.write(buffer, stereo, input_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()
