"""The paced senders of a process: every call's chunks put on the wire at their deadlines by one
scheduler, and the event loop's lag measured all the while.

`PacedSender` sends each chunk at its absolute deadline, never "sleep one chunk": a late wake-up is
paid back on the next chunk instead of pushing every later chunk back, so the stream cannot drift.

`Scheduler` (one per event loop) holds every sender of the process in one deadline queue and owns
one timer (`FineTimer`: nanoseconds on Linux) armed at the earliest deadline; when it fires, every
chunk due by then is sent in that one callback. Three choices keep that cheap at a thousand calls:

- **Stream epochs on a grid.** A call's stream epoch t0 (METRICS: stream time) is picked on a
  0.5 ms grid, at most one chunk after the socket opened: in the first phase of the chunk period
  that has streams and room for more (`PHASE_SHARE`), else in the one the fewest streams use. So
  deadlines of many calls coincide and one wake-up serves several (50 calls of 20 ms chunks: 10
  phases, about 850 wake-ups a second with the probes below, not 2,000; never more than 2,000
  however many calls), and streams that open together (a lockstep round) are spread over the
  chunk period instead of all falling due at once.
- **Never early.** A chunk leaves only once `time.monotonic_ns()` has reached its deadline; the
  timer is armed at the deadline itself (never before), so a chunk's lateness is only the timer's
  wake-up delay plus the chunks sent ahead of it in the same wake-up.
- **Loop lag, measured.** The timer is also armed at least every `PROBE_NS` while a call is
  running, and every wake-up records how late it came against the time it was armed for: the
  event loop's lag (METRICS: generator health). Wake-ups later than `LAG_FLOOR_NS` are kept with
  their time, and each call copies those of its own lifetime into its timeline (`loop.lag`), so a
  figure whose end was stamped while the loop was held up can be set apart (metrics/validity.py).

**Network impairment** (`impairment=`, uvbench/audio/impairment.py): a bad link between the caller
and the agent. The pacer still computes every deadline and the caller's side keeps time: chunk k is
captured (its bytes built, the script's stream position moved on) at its deadline, as a microphone
would, then held until the impairment releases it, `impairment.release_ns(k, due_k)`, rounded up to
the grid (`GRID_NS`, so impaired calls still share wake-ups with each other and with the deadlines;
it adds under 0.5 ms and keeps the order, as rounding up is non-decreasing). Every chunk released
by a wake-up leaves in it, so a burst's flush leaves at once. The release is recorded per chunk
(`release_ns`, the timeline's `audio_out_release`) and a chunk's lateness (generator health) is
its send time against its release, not its deadline: the link's delay is the impairment's, never
the generator's. On `stop()` the chunks still held leave at once (a closing connection delivers
what it buffered before its close), their release being the stop. Without an impairment (None)
none of this runs: the code path and the rows are those of an unimpaired sender.
"""

from __future__ import annotations

import asyncio
import bisect
import gc
import heapq
import itertools
import time
import weakref
from array import array
from collections import deque
from typing import Any, Protocol

import numpy as np
from websockets.exceptions import ConnectionClosed

from uvbench.audio.impairment import Impairment, impairment_for
from uvbench.audio.pacer import NS, Composer, Schedule
from uvbench.audio.timer import FineTimer

GRID_NS = 500_000
"""Stream epochs, and so every deadline of a stream whose chunk is a whole number of grid steps,
fall on multiples of this."""
PHASE_SHARE = 5
"""Streams put in one phase before another phase is opened. A wake-up costs the process about as
much as a few chunks sent (tens of µs on a VM coming out of idle), so light loads share wake-ups;
but each chunk sent ahead of another in a wake-up delays it by about 10 µs, so a phase takes no
more than a few until every phase has as many (at 200 calls of 20 ms chunks: 5 in each of 40; 10
per phase measured p50 lateness 0.19-0.20 ms there instead of 0.13-0.14)."""
PROBE_NS = 2_000_000
"""Longest stretch without a wake-up while a call is running: the resolution of the lag record."""
LAG_FLOOR_NS = 2_000_000
"""Wake-ups later than this are kept (with their time) for the calls' timelines: the least lag
that can set a figure apart (10 ms chunks: over half a chunk with PROBE_NS added) is above it."""
GC_BUDGET = 1_000_000
"""Pacing processes run without the automatic garbage collector (eventloop.settle_for_pacing):
a collection runs when the last call ends, or once this many objects piled up since the last."""
LAG_KEEP = 200_000
"""At most this many late wake-ups are kept for calls still running (the oldest go first)."""


class Scheduler:
    """The deadline queue and timer shared by every paced sender on one event loop."""

    _by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Scheduler] = weakref.WeakKeyDictionary()

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop | None = None) -> Scheduler:
        loop = loop or asyncio.get_running_loop()
        scheduler = cls._by_loop.get(loop)
        if scheduler is None:
            scheduler = cls._by_loop[loop] = cls(loop)
        return scheduler

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.timer = FineTimer(loop, self._wake)
        self._due: dict[int, list[PacedSender]] = {}
        """The senders due at each deadline, in the order they were queued: streams of one phase
        share every deadline, so a wake-up takes whole lists instead of one heap entry each."""
        self._times: list[int] = []
        """The deadlines of `_due`, a heap."""
        self._armed_ns: int | None = None
        self._phases: dict[int, list[int]] = {}
        self._calls: dict[int, int] = {}
        """Running calls (by token) and when each started: while any runs, the loop is probed."""
        self._tokens = itertools.count()
        self._late_fire: list[int] = []
        self._late_lag: list[int] = []
        """Every wake-up more than LAG_FLOOR_NS late: when it came and how late, oldest first."""
        self.wakeups = 0
        self.max_lag_ns = 0

    # -- calls and their lag record ---------------------------------------------------------------

    def call_started(self) -> int:
        """A call begins: the loop is probed from now on. Returns the token for `call_ended`."""
        token = next(self._tokens)
        now = time.monotonic_ns()
        self._calls[token] = now
        if self._armed_ns is None:
            self._arm(now + PROBE_NS)
        return token

    def call_ended(self, token: int) -> None:
        self._calls.pop(token, None)
        if not gc.isenabled() and (not self._calls or gc.get_count()[0] > GC_BUDGET):
            gc.collect()  # a pacing process, which runs without the automatic collector
        # Forget the late wake-ups no running call can ask for any more.
        oldest = min(self._calls.values(), default=None)
        keep_from = len(self._late_fire) if oldest is None else self._first_late(oldest)
        if keep_from > 0:
            del self._late_fire[:keep_from], self._late_lag[:keep_from]

    def _first_late(self, t_ns: int) -> int:
        return bisect.bisect_left(self._late_fire, t_ns - PROBE_NS)

    def lag_since(self, t_ns: int) -> list[list[int]]:
        """The late wake-ups from about `t_ns` on, as [fire_ns, lag_ns] (a call's `loop.lag`)."""
        i = self._first_late(t_ns)
        return [[fire, lag] for fire, lag in zip(self._late_fire[i:], self._late_lag[i:], strict=True)]

    # -- streams -----------------------------------------------------------------------------------

    def stream_epoch(self, open_ns: int, chunk_ns: int) -> tuple[int, Any]:
        """t0 for a stream opened at `open_ns`: on the grid, at most one chunk period later, in the
        first phase with streams and room for more, else the least used (the earliest of equals).
        Returns (t0, phase key), the key to give back with `release_phase` when the stream ends."""
        first = -(-open_ns // GRID_NS) * GRID_NS
        if chunk_ns <= 0 or chunk_ns % GRID_NS:  # deadlines off the grid: no phase to share
            return first, None
        phases = chunk_ns // GRID_NS
        counts = self._phases.setdefault(chunk_ns, [0] * phases)
        p0 = first // GRID_NS % phases
        order = [(p0 + i) % phases for i in range(phases)]
        # The first phase that has streams and room for more; else the least used one.
        step = next((i for i, p in enumerate(order) if 0 < counts[p] < PHASE_SHARE), None)
        if step is None:
            step = min(range(phases), key=lambda i: counts[order[i]])
        phase = (p0 + step) % phases
        counts[phase] += 1
        return first + step * GRID_NS, (chunk_ns, phase)

    def release_phase(self, key: Any) -> None:
        if key is not None:
            chunk_ns, phase = key
            self._phases[chunk_ns][phase] -= 1

    def next_wake_ns(self) -> int:
        """When the scheduler next needs the loop (a chunk due, or a probe); far off when idle.
        Long work on the loop (parsing a burst of frames) stops there and resumes afterwards."""
        armed = self._armed_ns
        return armed if armed is not None else 1 << 62

    def add(self, sender: PacedSender) -> None:
        """Queue `sender` at its next deadline (`sender.next_due_ns`)."""
        due = self._enqueue(sender)
        if self._armed_ns is None or due < self._armed_ns:
            self._arm(due)

    def _enqueue(self, sender: PacedSender) -> int:
        """Put `sender` in the list of its next deadline; returns that deadline."""
        due = sender.next_due_ns
        queued = self._due.get(due)
        if queued is None:
            self._due[due] = [sender]
            heapq.heappush(self._times, due)
        else:
            queued.append(sender)
        return due

    # -- the timer -------------------------------------------------------------------------------

    def _arm(self, t_ns: int) -> None:
        self._armed_ns = t_ns
        self.timer.arm(t_ns)

    def _wake(self) -> None:
        now = time.monotonic_ns()
        armed = self._armed_ns
        self._armed_ns = None
        if armed is not None:
            lag = now - armed
            if lag < 0:  # the loop's own timer (not timerfd) fired early: nothing is due yet
                self._arm(armed)
                return
            self.wakeups += 1
            if lag > LAG_FLOOR_NS:
                self._late_fire.append(now)
                self._late_lag.append(lag)
                if len(self._late_fire) > LAG_KEEP:
                    del self._late_fire[: LAG_KEEP // 2], self._late_lag[: LAG_KEEP // 2]
            if lag > self.max_lag_ns:
                self.max_lag_ns = lag
        times, by_due, enqueue = self._times, self._due, self._enqueue
        while times and times[0] <= now:
            for sender in by_due.pop(heapq.heappop(times)):
                if sender.send_due(now):
                    enqueue(sender)
                now = time.monotonic_ns()
        if times:
            due = times[0]
            self._arm(min(due, now + PROBE_NS) if self._calls else due)
        elif self._calls:
            self._arm(now + PROBE_NS)

    def close(self) -> None:
        self.timer.close()
        self._by_loop.pop(self.loop, None)


class StreamWatch(Protocol):
    """Who wants to know when the outgoing stream reaches a sample (the call's live state)."""

    stream_wake_sample: int
    """`notify()` once a chunk ending at or after this sample has left."""

    def notify(self) -> None: ...


class _NoWatch:
    stream_wake_sample = 1 << 62

    def notify(self) -> None:
        pass


class PacedSender:
    """One call's outgoing stream: each chunk at its deadline, sent by the loop's `Scheduler`.

    `socket` is anything with `send_binary(bytes)` (raising `websockets.ConnectionClosed` once
    closed), `writing_paused` and `call_when_writable(callback)`; when its buffer is full the stream
    waits for it to drain, and that wait shows as lateness. `done` resolves when the sender stops:
    on `stop()`, when the socket closes, or on an exception of its own (then kept in `error`).

    The time each chunk left is kept (`sent_ns`, 8 bytes a chunk); the rest of a chunk's record
    (deadline, samples) follows from the schedule, and `chunk_rows()` puts the records together
    once they are wanted, so a chunk sent costs one append. `watch` is told (`notify()`) when a
    chunk reaches its `stream_wake_sample`.

    With an `impairment` (see the module doc) chunks are captured at their deadlines and leave at
    their releases; `watch` is told as they are captured (the caller's side of the link: a script
    step waits for the user to have spoken, not for the link), and `release_ns` keeps each chunk's
    release, 8 bytes more a chunk.
    """

    def __init__(
        self,
        schedule: Schedule,
        composer: Composer,
        socket: Any,
        *,
        watch: StreamWatch | None = None,
        scheduler: Scheduler | None = None,
        phase: Any = None,
        impairment: Impairment | None = None,
    ) -> None:
        self.schedule = schedule
        self.composer = composer
        self.socket = socket
        self.watch: StreamWatch = watch if watch is not None else _NoWatch()
        self.scheduler = scheduler or Scheduler.of()
        self.phase = phase
        self.done: asyncio.Future[None] = self.scheduler.loop.create_future()
        self.stopped_ns: int | None = None
        """When the stream ended: `stop()` was called or the socket refused a chunk."""
        self.error: Exception | None = None
        self.next_due_ns = 0
        self.first_chunk = composer.next_chunk
        """The index of the first chunk this sender sent (`sent_ns[0]`)."""
        self.sent_ns = array("q")
        """When each chunk left, from `first_chunk` on."""
        self.impairment = impairment if impairment is not None and impairment.active else None
        self.release_ns = array("q")
        """With an impairment, when each captured chunk was released (on the grid), from
        `first_chunk` on: the first `len(sent_ns)` have left, the rest are still held."""
        self._held: deque[bytes] = deque()
        """The chunks captured and not yet released, oldest first."""

    def chunk_rows(self) -> array:
        """(deadline, sent, first sample, end sample) of every chunk sent so far, flat, in order: the
        timeline's `audio_out` rows."""
        sent = np.frombuffer(self.sent_ns, dtype=np.int64)
        n, rate, t0 = self.schedule.chunk_samples, self.schedule.sample_rate, self.schedule.t0_ns
        first = self.first_chunk
        rows = array("q")
        if not len(sent):
            return rows
        if (first + len(sent)) * n >= (1 << 62) // NS:  # beyond int64 for numpy: Python's integers
            for i, sent_ns in enumerate(self.sent_ns):
                k = first + i
                rows.extend((t0 - (-(k + 1) * n * NS // rate), sent_ns, k * n, (k + 1) * n))
            return rows
        ends = np.arange(first + 1, first + 1 + len(sent), dtype=np.int64) * n
        due = t0 - (-ends * NS // rate)  # rounded up, as in send_due
        rows.frombytes(np.stack([due, sent, ends - n, ends], axis=1).tobytes())
        return rows

    def release_rows(self) -> array:
        """When each chunk sent so far was released by the impairment, one value per `chunk_rows`
        row (the timeline's `audio_out_release`); empty without an impairment."""
        return array("q", self.release_ns[: len(self.sent_ns)])

    @property
    def held_chunks(self) -> int:
        """Chunks captured and still held by the impairment."""
        return len(self._held)

    def start(self) -> None:
        self.first_chunk = self.composer.next_chunk
        self.next_due_ns = self.schedule.due_ns(self.composer.next_chunk)
        self.scheduler.add(self)

    def stop(self) -> None:
        """End the stream: the audio captured up to now leaves first (as a client flushes its
        microphone's buffer before hanging up), so a loop held up just before the hang-up shows as
        those chunks' lateness, not as audio the stream never sent."""
        if self.stopped_ns is None:
            if self.impairment is not None:
                self._send_impaired(time.monotonic_ns(), flush=True)
            else:
                self.send_due(time.monotonic_ns())
            if self.stopped_ns is None:
                self._finish(time.monotonic_ns())

    def _finish(self, t_ns: int, error: Exception | None = None) -> None:
        self.stopped_ns, self.error = t_ns, error
        self.scheduler.release_phase(self.phase)
        self.phase = None
        if not self.done.done():
            self.done.set_result(None)

    def send_due(self, now: int) -> bool:
        """Send every chunk due by `now`; True to be queued again at `next_due_ns`."""
        if self.stopped_ns is not None:
            return False
        if self.impairment is not None:
            return self._send_impaired(now)
        socket, composer, schedule, watch = self.socket, self.composer, self.schedule, self.watch
        sent = self.sent_ns.append
        n = schedule.chunk_samples
        k = composer.next_chunk
        # Schedule.due_ns inlined (the hot path: 50 chunks a second per call).
        t0, span, rate = schedule.t0_ns, n * NS, schedule.sample_rate
        due = t0 - (-(k + 1) * span // rate)
        try:
            # Every chunk due by now leaves now: a late wake-up is paid back at once.
            while due <= now:
                if socket.writing_paused:
                    self.next_due_ns = due
                    socket.call_when_writable(self._writable)
                    return False
                socket.send_binary(composer.chunk(k))
                now = time.monotonic_ns()
                sent(now)
                k += 1
                if k * n >= watch.stream_wake_sample:
                    watch.notify()
                due = t0 - (-(k + 1) * span // rate)
        except ConnectionClosed:
            self._finish(time.monotonic_ns())
            return False
        except Exception as exc:
            self._finish(time.monotonic_ns(), exc)
            return False
        self.next_due_ns = due
        return True

    def _send_impaired(self, now: int, *, flush: bool = False) -> bool:
        """`send_due` through the impairment: capture every chunk due by `now`, then send every held
        chunk released by `now` (with `flush`, every held chunk: the stream is ending). True to be
        queued again at `next_due_ns`, the earlier of the next deadline and the next release."""
        if self.stopped_ns is not None:
            return False
        socket, composer, schedule, watch = self.socket, self.composer, self.schedule, self.watch
        impairment, held, releases = self.impairment, self._held, self.release_ns
        assert impairment is not None
        sent = self.sent_ns.append
        n = schedule.chunk_samples
        k = composer.next_chunk
        t0, span, rate = schedule.t0_ns, n * NS, schedule.sample_rate
        due = t0 - (-(k + 1) * span // rate)
        stop_ns = now
        # Where the next chunk to leave is in `releases`: the chunks before it have all left.
        i = len(self.sent_ns)
        try:
            # The caller's side keeps time whatever the link does: every chunk due is captured.
            while due <= now:
                held.append(composer.chunk(k))
                releases.append(-(-impairment.release_ns(k, due) // GRID_NS) * GRID_NS)
                k += 1
                if k * n >= watch.stream_wake_sample:
                    watch.notify()
                due = t0 - (-(k + 1) * span // rate)
            while held and (flush or releases[i] <= now):
                if socket.writing_paused:
                    self.next_due_ns = min(due, releases[i])
                    socket.call_when_writable(self._writable)
                    return False
                if flush and releases[i] > stop_ns:
                    releases[i] = stop_ns
                socket.send_binary(held.popleft())
                stamp = time.monotonic_ns()
                sent(stamp)
                if stamp > now:  # what the link released meanwhile goes too
                    now = stamp
                i += 1
        except ConnectionClosed:
            self._finish(time.monotonic_ns())
            return False
        except Exception as exc:
            self._finish(time.monotonic_ns(), exc)
            return False
        self.next_due_ns = min(due, releases[i]) if held else due
        return True

    def _writable(self) -> None:
        # The socket drained: what fell due meanwhile leaves now, not at the next wake-up.
        if self.send_due(time.monotonic_ns()):
            self.scheduler.add(self)


def network_impairment(plan: Any, t0_ns: int, *, seed: int | None = None) -> Impairment | None:
    """The impairment of a call's outgoing stream from its plan's `network` spec (None: no
    impairment, and the sender pays nothing per chunk), seeded with the call's own seed
    (`CallPlan.call_network_seed`: the plan says how a call's seed comes from the scenario's, the
    run's and the call's number), or `seed` to replay a recorded one. Burst windows and stalls are
    placed from the stream's epoch `t0_ns`. The sender keeps the releases itself, so the
    impairment keeps no record of its own."""
    spec = getattr(plan, "network", None)
    if spec is None:
        return None
    return impairment_for(
        spec, seed=plan.call_network_seed if seed is None else seed, t0_ns=t0_ns, record=False
    )
