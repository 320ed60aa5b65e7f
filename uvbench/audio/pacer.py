"""The outgoing audio stream: what each chunk holds, and when it is due (sans-I/O).

A microphone produces sample `s` at `t0 + s / rate`; a chunk holding samples [a, b) cannot leave
before its last sample exists, so it is due at `t0 + b / rate` (docs/metrics.md, "Stream time"). The
sender sleeps until each chunk's absolute deadline, never "sleep one chunk": a late wake-up is
then paid back on the next chunk instead of accumulating into drift. Lateness and drift are
measured, so a call whose generator fell behind can be marked invalid rather than blamed on the
agent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from uvbench.audio.transforms import Stream

NS = 1_000_000_000


@dataclass
class Schedule:
    """Chunk `k` carries samples [k*n, (k+1)*n) and is due at t0 + (k+1)*n/rate, in integer ns."""

    sample_rate: int
    chunk_samples: int
    t0_ns: int

    def due_ns(self, k: int) -> int:
        # Rounded up: a chunk never counts as due before its last sample exists.
        return self.t0_ns + -(-(k + 1) * self.chunk_samples * NS // self.sample_rate)

    def stream_ns(self, sample: float) -> int:
        """When sample `sample` of the stream is captured (its start)."""
        return self.t0_ns + round(sample * NS / self.sample_rate)

    def samples_due(self, t_ns: int) -> int:
        """How many samples a real-time source has produced by `t_ns`."""
        return max(0, (t_ns - self.t0_ns) * self.sample_rate // NS)

    def samples_due_on_grid(self, t_ns: int) -> int:
        """The samples of every chunk whose deadline has passed by `t_ns`."""
        return self.samples_due(t_ns) // self.chunk_samples * self.chunk_samples


@dataclass
class Utterance:
    start_sample: int
    pcm: np.ndarray

    @property
    def end_sample(self) -> int:
        return self.start_sample + self.pcm.size


@dataclass
class Composer:
    """The user's side of the stream: silence, except where an utterance has been queued.

    Utterances are placed at stream positions not yet sent, one after the other, never
    overlapping; `chunk(k)` builds the bytes of chunk k just before it leaves.

    With a `stream` (the stream side of the call's caller chain, `Chain.stream`), every chunk,
    silences included, goes through `stream.process` (the caller's room noise) on its way out.
    Without one, `chunk` is the plain composer's: a call with no noise pays nothing for it.
    """

    chunk_samples: int
    queued: list[Utterance] = field(default_factory=list)
    next_chunk: int = 0
    stream: Stream | None = field(default=None, repr=False, compare=False)
    _silence: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._silence = bytes(2 * self.chunk_samples)
        if self.stream is not None:
            # Bound on the instance: the plain `chunk` and its fast paths stay untouched.
            self.chunk = self._mixed_chunk  # type: ignore[method-assign]

    def _mixed_chunk(self, k: int) -> bytes:
        assert self.stream is not None
        plain = Composer.chunk(self, k)
        if plain is self._silence:  # most of a call: the room alone
            return self.stream.silence(self.chunk_samples).tobytes()
        return self.stream.process(np.frombuffer(plain, dtype=np.int16)).tobytes()

    @property
    def samples_sent(self) -> int:
        return self.next_chunk * self.chunk_samples

    @property
    def busy_until(self) -> int:
        """The stream sample where the last queued utterance ends (or the send position)."""
        return max([self.samples_sent] + [u.end_sample for u in self.queued])

    def enqueue(self, pcm: np.ndarray) -> Utterance:
        """Queue speech at the first free position (after anything queued); returns its placement."""
        utterance = Utterance(self.busy_until, np.asarray(pcm, dtype=np.int16))
        self.queued.append(utterance)
        return utterance

    def speaking(self) -> bool:
        """Whether any queued utterance is still (or yet) to be sent."""
        return any(u.end_sample > self.samples_sent for u in self.queued)

    def chunk(self, k: int) -> bytes:
        """The bytes of chunk k; chunks must be taken in order."""
        if k != self.next_chunk:
            raise ValueError(f"chunk {k} requested, {self.next_chunk} expected: chunks leave in order")
        a = k * self.chunk_samples
        b = a + self.chunk_samples
        queued = self.queued
        # Utterances are queued in stream order and dropped once sent: the first one decides the
        # two common cases cheaply (silence, or one utterance covering the whole chunk).
        if not queued or queued[0].start_sample >= b:
            self.next_chunk = k + 1
            return self._silence
        first = queued[0]
        if first.start_sample <= a and first.end_sample >= b:
            self.next_chunk = k + 1
            if first.end_sample == b:
                self.queued = queued[1:]
            return first.pcm[a - first.start_sample : b - first.start_sample].tobytes()
        out = np.zeros(self.chunk_samples, dtype=np.int16)
        for u in self.queued:
            lo, hi = max(a, u.start_sample), min(b, u.end_sample)
            if lo < hi:
                out[lo - a : hi - a] = u.pcm[lo - u.start_sample : hi - u.start_sample]
        # Utterances wholly sent are forgotten; the call keeps its own copy for the recording.
        self.queued = [u for u in self.queued if u.end_sample > b]
        self.next_chunk = k + 1
        return out.tobytes()


@dataclass
class PacerStats:
    """How well the generator kept real time (docs/metrics.md, "Generator health")."""

    lateness_ms: list[float]
    drift_ms: float

    def percentile(self, p: float) -> float | None:
        if not self.lateness_ms:
            return None
        return float(np.percentile(self.lateness_ms, p))


def drift_ms(schedule: Schedule, samples_sent: int, t_ns: int) -> float:
    """Audio sent minus audio due at `t_ns`, in ms, on the chunk grid: against every chunk whose
    deadline had passed. A chunk due a moment before and still on its way (late by its lateness,
    like any chunk) counts one chunk short, never more; a pacer that kept up reads 0 or -1 chunk."""
    return (samples_sent - schedule.samples_due_on_grid(t_ns)) * 1000 / schedule.sample_rate
