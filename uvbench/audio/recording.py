"""A call's stereo recording: left the user's audio as sent, right the agent's as heard.

Both channels sit on the call's clock from its stream epoch t0, at the agent's output rate. The
right channel is the listener's truth (docs/metrics.md): underflow gaps are silence and audio a clear
dropped is cut where it was dropped.

The recording is written block by block (`write_recording`), never built whole in memory: the
agent's audio is read from the file the call wrote it to as it arrived (`call/engine.py`, a
memory map), the user's from the scenario's clips. FLAC by default: lossless (the samples read
back are exactly those written), a fraction of a WAV's size for a call that is mostly silence on
one side or the other, and played by browsers' `<audio>`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from uvbench.call.timeline import Timeline
from uvbench.listener import Playback

NS = 1_000_000_000
BLOCK_S = 10
"""Seconds of stereo audio built and written at a time."""
FORMATS = {"flac": ("FLAC", "PCM_16"), "wav": ("WAV", "PCM_16")}


def _resample(pcm: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    if from_rate == to_rate:
        return pcm.astype(np.int16, copy=False)
    out = soxr.resample(pcm.astype(np.float32) / 32768.0, from_rate, to_rate, quality="HQ")
    return np.clip(np.round(out * 32768.0), -32768, 32767).astype(np.int16)


@functools.lru_cache(maxsize=64)
def _clip_at(path: Path, input_rate: int, output_rate: int) -> np.ndarray:
    from uvbench.audio.source import load_pcm

    return _resample(load_pcm(path, input_rate), input_rate, output_rate)


@dataclass(frozen=True)
class Segment:
    channel: int
    """0: the user (left), 1: the agent (right)."""
    offset: int
    """First output sample of the recording it covers."""
    samples: Any
    """int16 samples (an array, or a slice of the agent audio's memory map)."""


def segments(
    timeline: Timeline,
    playback: Playback,
    user_utterances: Sequence[tuple[int, np.ndarray]],
    agent_pcm: np.ndarray,
    *,
    input_rate: int,
    output_rate: int,
) -> list[Segment]:
    """Where each piece of audio goes. `user_utterances`: (stream start sample, pcm at the output
    rate); `agent_pcm`: every agent frame's samples back to back, in arrival order."""
    started = timeline.first("pacer.started")
    if started is None:
        return []
    origin = started.data["t0_ns"]
    rows = timeline.audio_out_rows()
    placed: list[Segment] = []
    for start_sample, pcm in user_utterances:
        # Sent with its chunk: capture time plus that chunk's lateness.
        chunk = next((r for r in rows if r[2] <= start_sample < r[3]), None)
        lateness = (chunk[1] - chunk[0]) if chunk else 0
        at = origin + start_sample * NS // input_rate + lateness
        placed.append(Segment(0, max(0, (at - origin) * output_rate // NS), pcm))
    frame_at = 0
    for i, samples in enumerate(playback.samples):
        first = frame_at
        frame_at += samples
        start = playback.play_start_ns[i] if i < len(playback.play_start_ns) else None
        if start is None:
            continue
        played = playback.played_samples[i]
        offset = (start - origin) * output_rate // NS
        if played > 0 and offset >= 0:
            placed.append(Segment(1, offset, agent_pcm[first : first + played]))
    return placed


def recording_samples(placed: Sequence[Segment]) -> np.ndarray:
    """The whole stereo recording as one (n, 2) int16 array (what `write_recording` writes)."""
    length = max((s.offset + len(s.samples) for s in placed), default=0)
    stereo = np.zeros((max(length, 1), 2), dtype=np.int16)
    for s in placed:
        stereo[s.offset : s.offset + len(s.samples), s.channel] = s.samples
    return stereo


def write_recording(target: Any, placed: Sequence[Segment], output_rate: int, *, fmt: str = "flac") -> None:
    """Write the stereo recording to `target` (a path or a binary file) block by block."""
    container, subtype = FORMATS[fmt]
    length = max((s.offset + len(s.samples) for s in placed), default=0)
    length = max(length, 1)
    block = BLOCK_S * output_rate
    by_block: dict[int, list[Segment]] = {}
    for s in placed:
        end = s.offset + len(s.samples)
        for b in range(s.offset // block, max(s.offset, end - 1) // block + 1):
            by_block.setdefault(b, []).append(s)
    with sf.SoundFile(target, "w", output_rate, 2, subtype, format=container) as out:
        for b in range(-(-length // block)):
            lo, hi = b * block, min(length, (b + 1) * block)
            stereo = np.zeros((hi - lo, 2), dtype=np.int16)
            for s in by_block.get(b, ()):
                a, z = max(lo, s.offset), min(hi, s.offset + len(s.samples))
                if a < z:
                    stereo[a - lo : z - lo, s.channel] = s.samples[a - s.offset : z - s.offset]
            out.write(stereo)


def agent_audio(path: Path | None) -> np.ndarray:
    """The agent audio a call wrote as it arrived, as int16 samples (memory-mapped, not read in)."""
    if path is None or not path.exists() or path.stat().st_size < 2:
        return np.zeros(0, dtype=np.int16)
    return np.memmap(path, dtype="<i2", mode="r", shape=(path.stat().st_size // 2,))


def user_audio(utterances: Sequence[tuple[int, Path]], input_rate: int, output_rate: int):
    """(stream start sample, pcm at the output rate) of each scripted utterance, from its clip."""
    return [(start, _clip_at(Path(path), input_rate, output_rate)) for start, path in utterances]
