"""A call's stereo recording: left the user's audio as sent, right the agent's as heard.

Both channels sit on the call's clock from its stream epoch t0, at the agent's output rate. The
right channel is the listener's truth (docs/metrics.md): underflow gaps are silence and audio a clear
dropped is cut where it was dropped.

The recording is written block by block (`write_recording`), never built whole in memory: the
agent's audio is read from the file the call wrote it to as it arrived (`call/engine.py`, a
memory map), the user's rebuilt as the call sent it. FLAC by default: lossless (the samples read
back are exactly those written), a fraction of a WAV's size for a call that is mostly silence on
one side or the other, and played by browsers' `<audio>`.

The user's channel: for a call whose audio went through a caller chain (`caller:`, the scenario's
or a step's), the whole stream the Composer sent, rebuilt in analysis a block at a time
(`SentAudio`): each clip through the chain it was sent with (the same cached or recomputed
`call.caller.clip_audio`), silence between, the call's noise bed mixed over all of it from the
call's own start, for the samples the call sent; placed from the stream's epoch (sample s at
t0 + s / rate) and resampled to the output rate as one signal. Sample for sample what was sent
when the two rates are equal. A clean call keeps the plain placement: each clip, resampled on its
own, from its chunk's send time.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import soundfile as sf
import soxr

from uvbench.call.timeline import Timeline
from uvbench.listener import Playback

if TYPE_CHECKING:
    from uvbench.audio.transforms import Chain, Stream
    from uvbench.call.engine import CallResult

NS = 1_000_000_000
BLOCK_S = 10
"""Seconds of stereo audio built and written at a time."""
SENT_BLOCK_S = 1
"""Seconds of the user's sent stream rebuilt (and resampled) at a time."""
FORMATS = {"flac": ("FLAC", "PCM_16"), "wav": ("WAV", "PCM_16")}


def _unit(pcm: np.ndarray) -> np.ndarray:
    return pcm.astype(np.float32) / 32768.0


def _pcm16(unit: np.ndarray) -> np.ndarray:
    return np.clip(np.round(unit * 32768.0), -32768, 32767).astype(np.int16)


def _resample(pcm: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    if from_rate == to_rate:
        return pcm.astype(np.int16, copy=False)
    return _pcm16(soxr.resample(_unit(pcm), from_rate, to_rate, quality="HQ"))


def resampled_length(samples: int, from_rate: int, to_rate: int) -> int:
    """How many samples soxr's one-shot resampling of `samples` gives: rounded half up."""
    if from_rate == to_rate:
        return samples
    return (2 * samples * to_rate + from_rate) // (2 * from_rate)


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
    """int16 samples (an array, a slice of the agent audio's memory map, or the user's stream as
    sent, `SentAudio`, which is sliced front to back)."""


def segments(
    timeline: Timeline,
    playback: Playback,
    user_utterances: Sequence[tuple[int, np.ndarray]],
    agent_pcm: np.ndarray,
    *,
    input_rate: int,
    output_rate: int,
    user_stream: SentAudio | None = None,
) -> list[Segment]:
    """Where each piece of audio goes. `user_utterances`: (stream start sample, pcm at the output
    rate); `agent_pcm`: every agent frame's samples back to back, in arrival order; `user_stream`:
    the user's whole stream as sent, from the stream's epoch (then `user_utterances` is empty)."""
    started = timeline.first("pacer.started")
    if started is None:
        return []
    origin = started.data["t0_ns"]
    rows = timeline.audio_out_rows()
    placed: list[Segment] = []
    if user_stream is not None and len(user_stream) > 0:
        placed.append(Segment(0, 0, user_stream))
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


def call_segments(result: CallResult, playback: Playback) -> list[Segment]:
    """Where each piece of a finished call's audio goes (`segments`): the user's side as sent
    (the module docstring: the whole stream for a call with a caller chain, else its clips), the
    agent's as heard (`playback`, from its audio file)."""
    plan = result.plan
    rates = {"input_rate": plan.input_rate, "output_rate": plan.output_rate}
    agent = agent_audio(result.agent_audio_path)
    if not sent_through_caller(result.user_audio, plan.caller):
        clips = user_audio(result.user_audio, plan.input_rate, plan.output_rate)
        return segments(result.timeline, playback, clips, agent, **rates)
    from uvbench.call.caller import plan_stream

    sent = sent_audio(result.user_audio, plan_stream(plan), result.samples_sent, **rates)
    return segments(result.timeline, playback, [], agent, **rates, user_stream=sent)


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


def user_audio(utterances: Sequence[tuple[Any, ...]], input_rate: int, output_rate: int):
    """(stream start sample, pcm at the output rate) of each scripted utterance, from its clean
    clip (a clean call's user channel)."""
    return [(entry[0], _clip_at(Path(entry[1]), input_rate, output_rate)) for entry in utterances]


def clip_chain(entry: tuple[Any, ...]) -> Chain | None:
    """The caller chain an utterance's clip was sent through (`CallResult.user_audio`); an entry
    without one (written before chains were kept) is a clean clip."""
    return entry[2] if len(entry) > 2 else None


def sent_through_caller(utterances: Sequence[tuple[Any, ...]], caller: Chain | None) -> bool:
    """Whether a call's user audio went through a caller chain: the scenario's, or a step's."""
    return caller is not None or any(clip_chain(entry) is not None for entry in utterances)


def sent_audio(
    utterances: Sequence[tuple[Any, ...]],
    stream: Stream | None,
    samples_sent: int,
    input_rate: int,
    output_rate: int,
) -> SentAudio:
    """The user's stream as the call sent it (`SentAudio`), each clip through its own chain.
    `stream`: the call's noise stream at its start (`call.caller.call_stream`), None without noise."""
    from uvbench.call.caller import clip_audio

    clips = [
        (entry[0], clip_audio(Path(entry[1]), input_rate, clip_chain(entry)).pcm) for entry in utterances
    ]
    return SentAudio(clips, stream, samples_sent, input_rate, output_rate)


class SentAudio:
    """The user's stream as sent, rebuilt at the output rate a block at a time, never whole.

    What the Composer made: `clips` (stream start sample, int16 at the input rate, as sent) over
    silence, every sample through the call's noise `stream` when it had one (the same mixing,
    `Stream.process`, from the same bed and start), for the `samples_sent` samples the call sent;
    then, when the rates differ, resampled as one signal (soxr's streaming resampler gives what
    its one-shot gives). Sliced front to back (`write_recording`); a slice from an earlier place
    starts over from the stream's start, the stream given being left untouched."""

    def __init__(
        self,
        clips: Sequence[tuple[int, np.ndarray]],
        stream: Stream | None,
        samples_sent: int,
        input_rate: int,
        output_rate: int,
    ) -> None:
        self._clips = sorted(clips, key=lambda clip: clip[0])
        self._stream = stream
        self._sent = max(0, samples_sent)
        self._in, self._out = input_rate, output_rate
        self._length = resampled_length(self._sent, input_rate, output_rate)
        self._restart()

    def __len__(self) -> int:
        return self._length

    def _restart(self) -> None:
        self._built = 0  # input samples rebuilt so far
        self._at = 0  # output samples handed out (or skipped) so far
        self._pending = np.zeros(0, dtype=np.int16)
        # A copy shares the (read-only) bed and starts where the given stream stands: the call's start.
        self._noise = copy.copy(self._stream) if self._stream is not None else None
        self._resampler = (
            soxr.ResampleStream(self._in, self._out, 1, dtype="float32", quality="HQ")
            if self._in != self._out
            else None
        )

    def _plain(self, a: int, b: int) -> np.ndarray:
        """Input samples [a, b) before the noise: the clips where they were queued, else silence."""
        out = np.zeros(b - a, dtype=np.int16)
        for start, pcm in self._clips:
            lo, hi = max(a, start), min(b, start + pcm.size)
            if lo < hi:
                out[lo - a : hi - a] = pcm[lo - start : hi - start]
        return out

    def _more(self) -> np.ndarray:
        """The next block's output samples."""
        a = self._built
        b = min(self._sent, a + SENT_BLOCK_S * self._in)
        self._built = b
        block = self._plain(a, b)
        if self._noise is not None:
            block = self._noise.process(block)
        if self._resampler is None:
            return block
        return _pcm16(self._resampler.resample_chunk(_unit(block), last=b == self._sent))

    def __getitem__(self, where: slice) -> np.ndarray:
        if not isinstance(where, slice) or where.step not in (None, 1):
            raise TypeError("SentAudio is read in slices of consecutive samples")
        start, stop, _ = where.indices(self._length)
        stop = max(start, stop)
        if start < self._at:
            self._restart()
        base, pending = self._at, self._pending  # pending: output samples [base, base + size)
        if start >= base + pending.size:
            base, pending = base + pending.size, pending[:0]
        while base + pending.size < stop and self._built < self._sent:
            part = self._more()
            if pending.size == 0 and base + part.size <= start:  # wholly before the slice
                base += part.size
                continue
            pending = np.concatenate([pending, part])
        if base + pending.size < stop:  # the resampler's last block came out short: pad to the length
            pending = np.concatenate([pending, np.zeros(stop - base - pending.size, dtype=np.int16)])
        out = pending[start - base : stop - base]
        self._pending = pending[stop - base :]
        self._at = stop
        return out

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        whole = self[0 : self._length]
        return whole if dtype is None else whole.astype(dtype)
