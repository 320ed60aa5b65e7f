"""The simulated listener: what a person at the client hears of the agent's audio (sans-I/O).

docs/metrics.md, "The simulated listener". Agent audio is played in real time at the output sample
rate; the buffer `B(t)` is the samples received minus the samples played, and playback runs at 1x
whenever `B > 0` (except while an utterance's start is held back by the prebuffer). The listener
is fed timestamps only; it never reads a clock:

    listener = Listener(ListenerConfig(sample_rate=24000))
    listener.on_audio(t_ns, samples, first_audible, last_audible)   # a frame arrived
    listener.on_clear(t_ns)                                          # playback_clear_buffer
    listener.on_utterance_end(t_ns)                                  # the agent's utterance is over
    playback = listener.finish(t_ns)

Timing model, exactly:
- Playback goes in *runs*: a run starts at some time `r` (a frame's arrival, or the moment the
  prebuffer is released) and plays its samples back to back; sample `k` of a run starts playing at
  `r + floor(k * 1e9 / rate)` ns. That formula (`_offset_ns`) is the only place time is rounded, so
  times never accumulate rounding error. A run ends when the buffer runs dry or a clear drops it.
- Sample `k` counts as played at time `t` when it started playing before `t` (strictly). A clear at
  `t` therefore keeps the samples that started before `t` (the last of them is cut at `t`) and
  drops the rest.
- `B(t)` jumps only when a frame arrives, so its maximum is taken just after each arrival.
- An underflow runs from the moment the buffer ran dry to the arrival of the next frame, if the
  agent was mid-utterance the whole time: no utterance end and no clear in between. One still
  open when the listener finishes (the call ended mid-utterance with the buffer dry) runs to the
  end and is counted (`open_at_end`).
- `prebuffer_ms` holds back the start of an utterance (the first frame after the call start, an
  utterance end or a clear, arriving while nothing plays) until that much audio is buffered or the
  utterance ends (or the listener finishes). After an underflow inside an utterance playback
  resumes at once: the prebuffer applies to an utterance's start only.
- Audio still buffered when `finish` is called plays out after it: received audio is heard.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass, field

NS = 1_000_000_000


@dataclass(frozen=True)
class ListenerConfig:
    sample_rate: int
    """Agent audio rate (the call's outputSampleRate), samples per second."""
    honor_clear: bool = True
    """Drop unplayed audio on `playback_clear_buffer` (the default), or ignore it and drain."""
    prebuffer_ms: float = 0.0
    """Audio held back at an utterance's start before playback begins (0 = play at once)."""
    client_buffer_ms: float | None = None
    """The clientBufferSizeMs the call asked for; only used to report overruns."""

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, not {self.sample_rate}")
        if self.prebuffer_ms < 0:
            raise ValueError(f"prebuffer_ms must not be negative, not {self.prebuffer_ms}")


@dataclass(frozen=True)
class Underflow:
    """The buffer was empty while the agent was mid-utterance, from `start_ns` to `end_ns`."""

    start_ns: int
    """When the buffer ran dry (the end of the last sample played)."""
    end_ns: int
    """When the next audio frame arrived; for one still open when the call ended, the end."""
    open_at_end: bool = False
    """The call ended with the buffer dry mid-utterance: no frame, utterance end or clear came."""

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns

    @property
    def ms(self) -> float:
        return self.duration_ns / 1e6


@dataclass(frozen=True)
class ClearEffect:
    """What a `playback_clear_buffer` did to playback."""

    t_ns: int
    """When the clear arrived."""
    dropped_samples: int
    """Unplayed samples dropped (0 when the clear is not honoured)."""
    silent_at_ns: int
    """When the listener stops hearing the audio buffered at the clear: the clear's arrival when
    honoured (or when nothing was playing), else the moment that audio has drained."""
    honoured: bool


@dataclass(frozen=True)
class Playback:
    """The listener's account of a call: when each received frame was heard, and what went wrong.

    Per frame `i` (in order of arrival): `play_start_ns[i]` is when its first sample starts playing
    (None when a clear dropped it before it started), `played_samples[i]` how many of its samples
    were played (the rest were dropped by a clear).
    """

    sample_rate: int
    arrival_ns: list[int]
    samples: list[int]
    play_start_ns: list[int | None]
    played_samples: list[int]
    underflows: list[Underflow]
    max_buffered_ms: float
    """The maximum of B(t) over the call, in ms of audio."""
    max_buffered_samples: int
    clears: list[ClearEffect]
    audible: list[tuple[int, int]]
    """Merged [start, end) intervals, in ns, during which non-silent agent audio is heard."""
    playing: list[tuple[int, int]]
    """Merged [start, end) intervals during which playback runs (B > 0 and not held back)."""
    end_ns: int
    """When the last played sample finished (playback may outlast `finish`); the finish time if
    nothing played after it."""
    client_buffer_ms: float | None = None
    frame_audible: list[tuple[int, int] | None] = field(default_factory=list, repr=False)
    """Per frame, the [start, end) span during which its non-silent samples are heard, or None."""
    frame_end_ns: list[int | None] = field(default_factory=list, repr=False)
    """Per frame, when its last played sample stops playing (cut at a clear), or None."""
    _run_start: list[int] = field(default_factory=list, repr=False)
    _run_offset: list[int] = field(default_factory=list, repr=False)

    # -- totals --------------------------------------------------------------------------------
    @property
    def samples_received(self) -> int:
        return sum(self.samples)

    @property
    def samples_played(self) -> int:
        return sum(self.played_samples)

    @property
    def samples_dropped(self) -> int:
        return self.samples_received - self.samples_played

    @property
    def underflow_ms(self) -> float:
        return sum(u.duration_ns for u in self.underflows) / 1e6

    @property
    def overrun_ms(self) -> float | None:
        """How far the buffer went above clientBufferSizeMs (0 when never), None if unknown."""
        if self.client_buffer_ms is None:
            return None
        return max(0.0, self.max_buffered_ms - self.client_buffer_ms)

    # -- queries -------------------------------------------------------------------------------
    def heard_at(self, frame_index: int, sample_offset: int) -> int | None:
        """When sample `sample_offset` of frame `frame_index` starts playing; None if never played."""
        if not 0 <= sample_offset < self.played_samples[frame_index]:
            return None
        offset = self._run_offset[frame_index] + sample_offset
        return self._run_start[frame_index] + offset * NS // self.sample_rate

    def first_audible_at_or_after(self, t_ns: int) -> int | None:
        """The first moment at or after `t_ns` at which the listener hears non-silent agent audio."""
        i = bisect.bisect_right(self.audible, (t_ns, math.inf))
        if i > 0 and self.audible[i - 1][1] > t_ns:
            return t_ns
        return self.audible[i][0] if i < len(self.audible) else None

    def last_audible_before(self, t_ns: int) -> int | None:
        """The end of the last non-silent agent audio heard before `t_ns` (capped at `t_ns`)."""
        i = bisect.bisect_left(self.audible, (t_ns, -math.inf))
        if i == 0:
            return None
        return min(self.audible[i - 1][1], t_ns)

    def audible_ns_between(self, start_ns: int, end_ns: int | None = None) -> int:
        """Total time non-silent agent audio is heard inside [start_ns, end_ns) (end None = no end)."""
        total = 0
        i = max(0, bisect.bisect_right(self.audible, (start_ns, math.inf)) - 1)
        for a, b in self.audible[i:]:
            if end_ns is not None and a >= end_ns:
                break
            lo, hi = max(a, start_ns), b if end_ns is None else min(b, end_ns)
            if hi > lo:
                total += hi - lo
        return total


class Listener:
    """Feed it a call's agent audio frames and playback events, in time order; then `finish`."""

    def __init__(self, config: ListenerConfig) -> None:
        self.config = config
        self._rate = config.sample_rate
        # Samples that make `prebuffer_ms` (the tiny epsilon keeps 20.0 ms at 16 kHz = 320, not 321).
        self._prebuffer = max(0, math.ceil(config.prebuffer_ms * self._rate / 1000 - 1e-9))
        self._t = -math.inf
        self._finished = False
        # Per frame.
        self._arrival: list[int] = []
        self._samples: list[int] = []
        self._first: list[int] = []
        self._last: list[int] = []
        self._run_start: list[int] = []
        self._run_off: list[int] = []
        self._played: list[int] = []
        self._cut: list[int | None] = []
        # The current run (playing), or the frames held back by the prebuffer (gated).
        self._queue: deque[int] = deque()
        self._run: int | None = None
        self._run_len = 0
        self._gated = False
        self._gated_samples = 0
        self._in_utterance = False
        self._dry_at: int | None = None
        self._max_b = 0
        self._underflows: list[Underflow] = []
        self._clears: list[ClearEffect] = []
        self._playing: list[tuple[int, int]] = []

    # -- time ----------------------------------------------------------------------------------
    def _offset_ns(self, samples: int) -> int:
        """How long `samples` samples take to play: the single place where time is rounded."""
        return samples * NS // self._rate

    def _played_in_run(self, t_ns: int) -> int:
        """Samples of the current run that started playing before `t_ns`."""
        assert self._run is not None
        return min(self._run_len, -(-(t_ns - self._run) * self._rate // NS))

    def _advance(self, t_ns: int) -> None:
        if self._finished:
            raise RuntimeError("the listener has finished")
        assert t_ns >= self._t, f"events must come in time order ({t_ns} after {self._t})"
        self._t = t_ns
        if self._run is not None:
            end = self._run + self._run_len * NS // self._rate  # `_offset_ns`
            if end <= t_ns:
                self._end_run(end)
                if self._in_utterance:
                    self._dry_at = end

    def _end_run(self, end_ns: int) -> None:
        assert self._run is not None
        if end_ns > self._run:
            if self._playing and self._playing[-1][1] >= self._run:
                self._playing[-1] = (self._playing[-1][0], end_ns)
            else:
                self._playing.append((self._run, end_ns))
        self._run = None
        self._run_len = 0
        self._queue.clear()

    def _join_run(self, i: int) -> None:
        assert self._run is not None
        self._run_start[i] = self._run
        self._run_off[i] = self._run_len
        self._played[i] = self._samples[i]
        self._run_len += self._samples[i]

    def _release(self, t_ns: int) -> None:
        """Start playing what the prebuffer held back."""
        self._gated = False
        self._gated_samples = 0
        held = list(self._queue)
        self._queue.clear()
        self._run = t_ns
        self._run_len = 0
        for i in held:
            self._join_run(i)
            self._queue.append(i)

    def _buffered(self, t_ns: int) -> int:
        if self._run is not None:
            return self._run_len - self._played_in_run(t_ns)
        return self._gated_samples if self._gated else 0

    # -- events --------------------------------------------------------------------------------
    def on_audio(self, t_ns: int, samples: int, first_audible: int, last_audible: int) -> None:
        """A frame of `samples` agent samples arrived at `t_ns`; its first and last non-silent
        samples are `first_audible` and `last_audible` (-1 and -1 when it is all silence)."""
        if samples < 0:
            raise ValueError(f"a frame cannot hold {samples} samples")
        self._advance(t_ns)
        i = len(self._arrival)
        self._arrival.append(t_ns)
        self._samples.append(samples)
        self._first.append(first_audible)
        self._last.append(last_audible)
        self._cut.append(None)
        run = self._run
        if samples == 0 or run is None:
            self._run_start.append(-1)
            self._run_off.append(0)
            self._played.append(0)
            if samples == 0:
                return  # no audio in it: it neither plays nor ends an underflow
        new_utterance = not self._in_utterance
        self._in_utterance = True
        if self._dry_at is not None:
            if t_ns > self._dry_at:
                self._underflows.append(Underflow(self._dry_at, t_ns))
            self._dry_at = None
        if run is not None:  # it joins the run playing (`_join_run`, written out: the common case)
            run_len = self._run_len
            self._run_start.append(run)
            self._run_off.append(run_len)
            self._played.append(samples)
            self._run_len = run_len = run_len + samples
            self._queue.append(i)
            started = -(-(t_ns - run) * self._rate // NS)  # `_buffered`, written out
            if run_len - started > self._max_b:
                self._max_b = run_len - started
            return
        if self._gated:
            self._queue.append(i)
            self._gated_samples += samples
            if self._gated_samples >= self._prebuffer:
                self._release(t_ns)
        elif new_utterance and samples < self._prebuffer:
            self._gated = True
            self._gated_samples = samples
            self._queue.append(i)
        else:
            self._run = t_ns
            self._run_len = 0
            self._join_run(i)
            self._queue.append(i)
        self._max_b = max(self._max_b, self._buffered(t_ns))

    def on_clear(self, t_ns: int) -> None:
        """`playback_clear_buffer` arrived at `t_ns`."""
        self._advance(t_ns)
        self._in_utterance = False
        self._dry_at = None
        if not self.config.honor_clear:
            if self._gated:
                self._release(t_ns)
            silent = self._run + self._offset_ns(self._run_len) if self._run is not None else t_ns
            self._clears.append(ClearEffect(t_ns, 0, silent, honoured=False))
            return
        dropped = 0
        if self._run is not None:
            played = self._played_in_run(t_ns)
            dropped = self._run_len - played
            for i in self._queue:
                off, n = self._run_off[i], self._samples[i]
                if off + n < played:
                    continue
                if off < played:  # holds the sample playing at t_ns, which is cut there
                    self._played[i] = played - off
                    self._cut[i] = t_ns
                else:
                    self._played[i] = 0
                    self._run_start[i] = -1
            self._end_run(t_ns)
        elif self._gated:
            dropped = self._gated_samples
            self._gated = False
            self._gated_samples = 0
            self._queue.clear()
        self._clears.append(ClearEffect(t_ns, dropped, t_ns, honoured=True))

    def on_utterance_end(self, t_ns: int) -> None:
        """The agent's utterance is over (its final transcript, or its state left "speaking")."""
        self._advance(t_ns)
        self._in_utterance = False
        self._dry_at = None
        if self._gated:
            self._release(t_ns)

    def finish(self, t_ns: int) -> Playback:
        """The call is over at `t_ns`: release any held-back audio and account for everything."""
        self._advance(t_ns)
        if self._gated:
            self._release(t_ns)
        if self._dry_at is not None and t_ns > self._dry_at:
            # Dry mid-utterance until the call ended (a stalled agent the call gave up on): the
            # listener heard silence from then to the end, an underflow like any other.
            self._underflows.append(Underflow(self._dry_at, t_ns, open_at_end=True))
            self._dry_at = None
        end = t_ns
        if self._run is not None:
            end = self._run + self._offset_ns(self._run_len)
            self._end_run(end)
        self._finished = True
        return self._playback(end)

    def _playback(self, end_ns: int) -> Playback:
        rate = self._rate
        play_start: list[int | None] = []
        frame_end: list[int | None] = []
        frame_audible: list[tuple[int, int] | None] = []
        audible: list[tuple[int, int]] = []
        columns = (self._played, self._run_start, self._run_off, self._cut, self._first, self._last)
        frames = zip(*columns, strict=True)
        for played, run, off, cut, first, last in frames:
            if played == 0:
                play_start.append(None)
                frame_end.append(None)
                frame_audible.append(None)
                continue
            play_start.append(run + off * NS // rate)
            stop = run + (off + played) * NS // rate
            frame_end.append(stop if cut is None else min(stop, cut))
            span = None
            if 0 <= first < played and last >= first:
                a = run + (off + first) * NS // rate
                b = run + (off + min(last + 1, played)) * NS // rate
                if cut is not None:
                    b = min(b, cut)
                if b > a:
                    span = (a, b)
                    if audible and a <= audible[-1][1]:
                        audible[-1] = (audible[-1][0], max(audible[-1][1], b))
                    else:
                        audible.append(span)
            frame_audible.append(span)
        return Playback(
            sample_rate=rate,
            arrival_ns=list(self._arrival),
            samples=list(self._samples),
            play_start_ns=play_start,
            played_samples=list(self._played),
            underflows=list(self._underflows),
            max_buffered_ms=self._max_b * 1000 / rate,
            max_buffered_samples=self._max_b,
            clears=list(self._clears),
            audible=audible,
            playing=list(self._playing),
            end_ns=end_ns,
            client_buffer_ms=self.config.client_buffer_ms,
            frame_audible=frame_audible,
            frame_end_ns=frame_end,
            _run_start=list(self._run_start),
            _run_offset=list(self._run_off),
        )
