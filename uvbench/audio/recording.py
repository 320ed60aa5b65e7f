"""A call's stereo recording: left the user's audio as sent, right the agent's as heard.

Both channels sit on the call's clock from the moment the socket opened, at the agent's output
rate. The right channel is the listener's truth (METRICS.md): underflow gaps are silence and audio
a clear dropped is cut where it was dropped.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import soundfile as sf
import soxr

from uvbench.call.timeline import Timeline
from uvbench.listener import Playback

NS = 1_000_000_000


def _resample(pcm: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    if from_rate == to_rate:
        return pcm.astype(np.int16, copy=False)
    out = soxr.resample(pcm.astype(np.float32) / 32768.0, from_rate, to_rate, quality="HQ")
    return np.clip(np.round(out * 32768.0), -32768, 32767).astype(np.int16)


def stereo_recording(
    timeline: Timeline,
    playback: Playback,
    user_utterances: Sequence[tuple[int, np.ndarray]],
    agent_frames: Sequence[bytes],
    *,
    input_rate: int,
    output_rate: int,
) -> bytes:
    """WAV bytes of the call as a person on the user's side would have heard it, both sides."""
    started = timeline.first("pacer.started")
    if started is None:
        return b""
    origin = started.data["t0_ns"]
    rows = timeline.audio_out_rows()
    placed: list[tuple[int, int, np.ndarray]] = []  # (channel, offset, samples)
    for start_sample, pcm in user_utterances:
        # Sent with its chunk: capture time plus that chunk's lateness.
        chunk = next((r for r in rows if r[2] <= start_sample < r[3]), None)
        lateness = (chunk[1] - chunk[0]) if chunk else 0
        at = origin + start_sample * NS // input_rate + lateness
        placed.append((0, (at - origin) * output_rate // NS, _resample(pcm, input_rate, output_rate)))
    for i, frame in enumerate(agent_frames):
        if i >= len(playback.play_start_ns) or playback.play_start_ns[i] is None:
            continue
        played = playback.played_samples[i]
        samples = np.frombuffer(frame[: played * 2], dtype="<i2")
        placed.append((1, (playback.play_start_ns[i] - origin) * output_rate // NS, samples))
    length = max((offset + s.size for _, offset, s in placed), default=0)
    stereo = np.zeros((max(length, 1), 2), dtype=np.int16)
    for channel, offset, samples in placed:
        offset = max(0, offset)
        stereo[offset : offset + samples.size, channel] = samples
    buffer = io.BytesIO()
    sf.write(buffer, stereo, output_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()
