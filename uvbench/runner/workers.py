"""The processes of a run: pacing processes carry the calls, analysis processes measure them, and
this process (the coordinator) owns the run folder.

```
coordinator (this process: run folder, results.jsonl, live view, step verdicts)
  ├─ pacing process 0..W-1   each its own (uv)loop: calls on the wire only (create, join, paced
  │                          audio out, frames in and stamped, the script); a finished call is
  │                          spooled to a file and handed over as ("raw", ...)
  └─ analysis process 0..A-1 each finished call: read back, figures, expectations, recording,
                             timeline file; its record comes back as ("record", ...)
```

Why: everything a call needs after it ends (about 20 ms of CPU per call for the listener,
metrics, recording and files, more for reading the call back over HTTP) used to run in the process
whose event loop paces the other calls, so when a round of calls ended together (k6's lockstep
`--vus 50`) the next round's audio left late. Now a pacing process does nothing but the wire.

- **Pacing**: the parent resolves targets once (it starts the local server, once) and gives the
  workers the endpoints; `LoadProfile.share` splits the profile (concurrency, stage targets,
  iterations, the open model's arrivals and cap); worker w takes items w, w+W, ... of the run's
  work order. All workers start on one shared CLOCK_MONOTONIC instant after every one said ready.
- **Analysis**: the coordinator numbers each handed-over call (its file stem) and gives it to the
  analysis process with the fewest calls in hand; that process writes the call's timeline and
  recordings into the run folder and sends the record back; the coordinator writes the record
  (calls/<stem>.json) and appends results.jsonl (the only writer, so lines never interleave),
  folds it into `RunState` (the live view) and calls `on_call`. If an analysis process dies, its
  calls in hand are given to a new one (their spool files are still there); a call whose
  analysis fails twice is lost and counted.
- **Tags**: `worker` is added; `vu` is run-wide (local*W + w); `iteration` (the run's start order,
  from 0) and `attempt` (the scenario's start order, from 1) come from run-wide counters in shared
  memory, so they have no gaps when one process starts more calls than another; `concurrency` is
  the run's calls in flight once the call started, itself included: every pacing process
  publishes its own count in a shared-memory array (one slot per worker, written only by it) and
  sums all slots at each start.
- **Ctrl-C**: the parent asks the pacing processes to cancel their calls; what was handed over is
  still analysed; a second Ctrl-C stops waiting.
- **A pacing process that dies** does not stop the run: its finished calls stay, the parent prints
  one line (`on_worker_failed`), summary.json lists it under `workers.failed`, exit code 3.
- **Step mode**: the parent owns the `Stepper` and sends each worker its share of the level;
  workers tell it each start and acknowledge each level change.

Processes start from a fork server that has imported uvbench once (forkserver where the platform
has it, else spawn): starting one costs milliseconds, not the second of imports, and never forks
this process's threads (the live view).
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from uvbench.analysis.worker import AnalysisSpec, analysis_main
from uvbench.report.run_folder import RunFolder
from uvbench.runner.fanout import LoadGroup, RecordTally, RunState
from uvbench.runner.load import LoadProfile, split_count, whole_profile
from uvbench.runner.step import Stepper, StepProfile
from uvbench.scenario import Scenario

FAULT_ENV = "UVBENCH_TEST_WORKER_EXIT"
"""Test hook: "W:N" makes pacing worker W exit (code 70, no cleanup) right after handing over its
N-th call."""
PROFILE_ENV = "UVBENCH_PROFILE"
"""For benchmarks: "PATH" writes each pacing process's cProfile statistics to PATH.pacing<w>."""
STARTUP_TIMEOUT_S = 60.0
CANCEL_TIMEOUT_S = 15.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""What stops a run cleanly (Ctrl-C, and what `timeout`, CI cancellation and `docker stop` send):
handled by the coordinator, ignored by its pacing and analysis processes."""
DRAIN_TIMEOUT_S = 120.0
"""After the load: how long the analysis of the calls already handed over may take at most."""
_STARTED, _IN_FLIGHT, _DROPPED, _INTERRUPTED = range(4)
SLOTS = 4
"""Slots per worker in the shared counters array (each written only by its worker)."""
ANALYSIS_TRIES = 2


def process_context() -> Any:
    """forkserver (with uvbench's call and analysis modules imported once in the server) where
    the platform has it, else spawn."""
    try:
        ctx = multiprocessing.get_context("forkserver")
    except ValueError:
        return multiprocessing.get_context("spawn")
    ctx.set_forkserver_preload(["uvbench.runner.workers"])
    return ctx


def analysis_processes(pacing: int) -> int:
    """Analysis processes for `pacing` pacing processes: one per two (a call's analysis costs a
    fraction of its wire time), at least one."""
    return max(1, (pacing + 1) // 2)


@dataclass
class WorkerSpec:
    """What a pacing process needs (pickled once at its start)."""

    worker: int
    workers: int
    scenarios: list[Scenario]
    endpoints: dict[str, Any]
    profile: LoadProfile | None
    """Its share of the load; None in step mode (the parent sends levels) or with groups."""
    step_total_s: float | None
    repeat: int
    seed: int | None
    spool: Path
    """Where finished calls are handed over (and agent audio written as it arrives)."""
    record: str | None = None
    scenario_tags: dict[str, dict[str, Any]] | None = None
    groups: list[LoadGroup] | None = None
    """A suite's loads in parallel (one pacing process only)."""
    crash_after: int | None = None
    """FAULT_ENV, read by the parent."""
    give_up_after_s: float | None = None
    """Stop the run when every create at a target has failed this long (call/target_health.py)."""


@dataclass
class _Job:
    worker: int
    spool: str
    scenario: int
    tags: dict[str, Any]
    stem: str
    tries: int = 0


# ------------------------------------------------------------------------------------------------
# The coordinator


def run_fleet(
    scenarios: list[Scenario],
    folder: RunFolder,
    endpoints: dict[str, Any],
    *,
    workers: int,
    profile: LoadProfile | None = None,
    step: Stepper | None = None,
    groups: list[LoadGroup] | None = None,
    repeat: int = 1,
    seed: int | None = None,
    record: str | None = None,
    on_call: Callable[[dict[str, Any], Path], None] | None = None,
    on_drop: Callable[[int], None] | None = None,
    on_worker_failed: Callable[[str], None] | None = None,
    state: RunState,
    scenario_tags: dict[str, dict[str, Any]] | None = None,
    give_up_after_s: float | None = None,
    on_calls_over: Callable[[], None] | None = None,
) -> _Fleet:
    """Run the load in `workers` pacing processes (and their analysis processes) into `folder`;
    the fleet, with its records, failures and whether it was interrupted. `on_calls_over` is
    called as the fleet stops handling SIGINT and SIGTERM (the CLI holds them from then on)."""
    if groups:
        count = 1
        shares: list[LoadProfile | None] = [None]
    elif step is not None:
        count = max(1, min(workers, step.plan.max))
        shares = [None] * count
    else:
        whole = whole_profile(profile, len(scenarios) * repeat)
        count = whole.useful_workers(workers)
        shares = [whole.share(w, count) for w in range(count)]
        assert all(shares), "useful_workers leaves no worker without a share"
    spool = folder.path / ".spool"
    spool.mkdir(exist_ok=True)
    crash = _fault(os.environ.get(FAULT_ENV, ""))
    specs = [
        WorkerSpec(
            worker=w,
            workers=count,
            scenarios=scenarios,
            endpoints=endpoints,
            profile=shares[w],
            step_total_s=step.plan.total_s if step else None,
            repeat=repeat,
            seed=seed,
            spool=spool,
            record=record,
            scenario_tags=scenario_tags,
            groups=groups,
            crash_after=crash.get(w),
            give_up_after_s=give_up_after_s,
        )
        for w in range(count)
    ]
    analysis = AnalysisSpec(scenarios, endpoints, folder.path, record)
    fleet = _Fleet(specs, analysis, folder, state, step, on_call, on_drop, on_worker_failed)
    try:
        fleet.run()
    finally:
        if on_calls_over is not None:  # before the shutdown's joins: a Ctrl-C there would be lost
            on_calls_over()
        fleet.shutdown()
        for leftover in spool.iterdir():
            leftover.unlink(missing_ok=True)
        spool.rmdir()
    return fleet


def _fault(text: str) -> dict[int, int]:
    if not text:
        return {}
    target, _, after = text.partition(":")
    return {int(target): int(after or 1)}


class _Fleet:
    """The coordinator's side: starts the processes, dispatches analysis, merges records, steps
    levels, stops them."""

    def __init__(
        self,
        specs: list[WorkerSpec],
        analysis: AnalysisSpec,
        folder: RunFolder,
        state: RunState,
        step: Stepper | None,
        on_call: Callable[[dict[str, Any], Path], None] | None,
        on_drop: Callable[[int], None] | None,
        on_worker_failed: Callable[[str], None] | None,
    ) -> None:
        self.specs = specs
        self.analysis = analysis
        self.folder = folder
        self.state = state
        self.step = step
        self.on_call = on_call
        self.on_drop = on_drop
        self.on_worker_failed = on_worker_failed
        self.tally = RecordTally()
        """What the summary needs of the records; the records themselves are on disk only (a long
        run's would grow the coordinator's memory, and its garbage collector's pauses, call by call)."""
        self.failed: list[dict[str, Any]] = []
        self.lost: list[str] = []
        """One line per call that gave no record (its analysis failed)."""
        self.interrupted = False
        self.stopped_by: str | None = None
        """The signal that stopped the run ("SIGINT", "SIGTERM"), if one did."""
        self.gave_up: str | None = None
        """Why the run stopped itself: every create at a target failed for too long (one line)."""
        self._sigints = 0
        n = len(specs)
        self._ctx = process_context()
        self.counters = self._ctx.Array("q", SLOTS * n, lock=False)
        self.numbers = self._ctx.Array("q", 1 + len(specs[0].scenarios) if specs else 1)
        """Run-wide start counters (the calls, then each scenario's), taken under the array's lock."""
        self.procs: list[Any] = []
        self.conns: list[Connection] = []
        self.ready: set[int] = set()
        self.done: set[int] = set()
        self.errors: dict[int, str] = {}
        self.alive: set[int] = set()
        self.calls_by: list[int] = [0] * n
        self.started_by: list[dict[int, int]] = [{} for _ in range(n)]
        self.ended_by: list[dict[int, int]] = [{} for _ in range(n)]
        self.pending_acks: dict[int, set[int]] = {}
        self.level: int | None = None
        self.t0 = 0.0
        self._dropped_seen = 0
        # Analysis processes: (process, connection) by slot, and the calls each has in hand.
        self.analysers: list[tuple[Any, Connection] | None] = []
        self.in_hand: list[dict[int, _Job]] = []
        self._job_ids = itertools.count(1)
        self._drain_deadline: float | None = None
        self._stopped_by_user: set[int] = set()
        """Pacing processes killed because the user asked twice: not a failure of the load generator."""

    # -- lifecycle -------------------------------------------------------------------------------

    def run(self) -> None:
        previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                previous[sig] = signal.signal(sig, self._on_stop_signal)
        try:
            self._start()
            self._wait_ready()
            self._go()
            self._loop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        # Ctrl-C and SIGTERM alike: the first stops the run (its finished calls kept), a second
        # stops waiting for the calls in flight.
        self._sigints += 1
        if self.stopped_by is None:
            self.stopped_by = signal.Signals(signum).name

    def _start(self) -> None:
        # Children started while SIGINT and SIGTERM are ignored keep ignoring them from their
        # first instruction (Python installs its KeyboardInterrupt handler only over the default
        # disposition), so a Ctrl-C at the terminal or a SIGTERM to the whole process group
        # reaches only the parent, which cancels their calls and keeps what finished.
        main_thread = threading.current_thread() is threading.main_thread()
        handlers = {sig: signal.signal(sig, signal.SIG_IGN) for sig in STOP_SIGNALS} if main_thread else {}
        try:
            for _ in range(analysis_processes(len(self.specs))):
                self.analysers.append(None)
                self.in_hand.append({})
                self._start_analyser(len(self.analysers) - 1)
            for spec in self.specs:
                parent_end, child_end = self._ctx.Pipe(duplex=True)
                proc = self._ctx.Process(
                    target=worker_main,
                    args=(spec, child_end, self.counters, self.numbers),
                    name=f"uvbench-pacing-{spec.worker}",
                    daemon=True,
                )
                proc.start()
                child_end.close()
                self.procs.append(proc)
                self.conns.append(parent_end)
                self.alive.add(spec.worker)
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)

    def _start_analyser(self, slot: int) -> None:
        parent_end, child_end = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=analysis_main,
            args=(self.analysis, child_end),
            name=f"uvbench-analysis-{slot}",
            daemon=True,
        )
        proc.start()
        child_end.close()
        self.analysers[slot] = (proc, parent_end)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while self.alive - self.ready:
            if self._sigints:
                return
            if time.monotonic() > deadline:
                for w in sorted(self.alive - self.ready):
                    self.procs[w].kill()  # they ignore SIGTERM: the parent decides
            self._poll(0.1)

    def _go(self) -> None:
        if self._sigints:
            return
        self.t0 = time.monotonic() + 0.02  # one start instant for all (CLOCK_MONOTONIC is system-wide)
        self.state.t0 = self.t0
        for w in sorted(self.alive):
            self._send(w, ("go", self.t0))
        self._step_levels()

    def _jobs_in_hand(self) -> int:
        return sum(len(jobs) for jobs in self.in_hand)

    def _loop(self) -> None:
        cancelled_at: float | None = None
        while self.alive or self._jobs_in_hand():
            if (self._sigints or self.gave_up) and cancelled_at is None:
                self.interrupted = bool(self._sigints)
                cancelled_at = time.monotonic()
                why = () if self._sigints else (f"the run gave up: {self.gave_up}",)
                for w in sorted(self.alive):
                    self._send(w, ("cancel", *why))
            late = cancelled_at is not None and time.monotonic() - cancelled_at > CANCEL_TIMEOUT_S
            if late or self._sigints > 1:  # a second Ctrl-C: stop waiting for them
                for w in sorted(self.alive):
                    if self._sigints > 1:
                        self._stopped_by_user.add(w)
                    self.procs[w].kill()  # they ignore SIGTERM: the parent decides
                if self._sigints > 1:
                    self._give_up_analysis("the run was stopped (a second Ctrl-C)")
            if not self.alive:
                if self._drain_deadline is None:
                    self._drain_deadline = time.monotonic() + DRAIN_TIMEOUT_S
                elif time.monotonic() > self._drain_deadline:
                    self._give_up_analysis(f"its analysis did not finish within {DRAIN_TIMEOUT_S:.0f} s")
            self._poll(0.05)
            if cancelled_at is None:
                self._step_levels()

    def _give_up_analysis(self, why: str) -> None:
        for slot, jobs in enumerate(self.in_hand):
            for job in jobs.values():
                self._lost(job, f"a call of worker {job.worker}: {why}")
            jobs.clear()
            self._stop_analyser(slot, terminate=True)

    def shutdown(self) -> None:
        """Make sure no process outlives the run (normally they have all exited by now)."""
        for slot in range(len(self.analysers)):
            self._stop_analyser(slot)
        for proc in self.procs:
            if proc.is_alive():
                proc.kill()
        for proc in self.procs:
            proc.join(timeout=5)
        for conn in self.conns:
            conn.close()

    def _stop_analyser(self, slot: int, *, terminate: bool = False) -> None:
        entry = self.analysers[slot]
        if entry is None:
            return
        proc, conn = entry
        self.analysers[slot] = None
        if not terminate:
            try:
                conn.send(("stop",))
            except (OSError, EOFError, BrokenPipeError):
                pass
            proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=5)
        conn.close()

    # -- messages ----------------------------------------------------------------------------------

    def _send(self, w: int, message: tuple[Any, ...]) -> None:
        try:
            self.conns[w].send(message)
        except (OSError, EOFError, BrokenPipeError):
            pass  # the worker is gone; its sentinel tells

    def _poll(self, timeout: float) -> None:
        waitables: dict[Any, tuple[str, int]] = {}
        for w in self.alive:
            waitables[self.conns[w]] = ("pacing", w)
            waitables[self.procs[w].sentinel] = ("pacing-exit", w)
        for slot, entry in enumerate(self.analysers):
            if entry is not None:
                waitables[entry[1]] = ("analysis", slot)
                waitables[entry[0].sentinel] = ("analysis-exit", slot)
        if not waitables:
            time.sleep(timeout)
            return
        for ready in wait(list(waitables), timeout):
            what, i = waitables[ready]
            if what == "pacing" and i in self.alive:
                self._drain(i)
            elif what == "pacing-exit" and i in self.alive:  # first read what it sent before it ended
                self._drain(i, to_eof=True)
                self._exited(i)
            elif what == "analysis" and self.analysers[i] is not None:
                self._drain_analysis(i)
            elif what == "analysis-exit" and self.analysers[i] is not None:
                self._drain_analysis(i, to_eof=True)
                self._analyser_died(i)
        self._refresh()

    def _drain(self, w: int, *, to_eof: bool = False) -> None:
        conn = self.conns[w]
        try:
            while to_eof or conn.poll():
                self._handle(w, conn.recv())
        except (EOFError, OSError):
            pass

    def _handle(self, w: int, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "raw":
            self._dispatch(w, message[2])
        elif kind == "started":
            level = message[2]
            self.started_by[w][level] = self.started_by[w].get(level, 0) + 1
            if self.step is not None:
                self.step.started(level)
        elif kind == "lost":
            self._ended(w, message[2], None)
            self.state.finished += 1
        elif kind == "ack":
            self._acked(w, message[2])
        elif kind == "ready":
            self.ready.add(w)
        elif kind == "done":
            self.done.add(w)
        elif kind == "error":
            self.errors[w] = message[2]
        elif kind == "gave_up" and self.gave_up is None:  # the other workers are cancelled too
            self.gave_up = message[2]

    # -- analysis ----------------------------------------------------------------------------------

    def _dispatch(self, w: int, raw: dict[str, Any]) -> None:
        scenario = self.analysis.scenarios[raw["scenario"]]
        self.calls_by[w] += 1  # its finished calls: handed over, measured or not yet
        job = _Job(w, raw["spool"], raw["scenario"], raw["tags"], self.folder.call_stem(scenario.name))
        self._give(next(self._job_ids), job)

    def _give(self, job_id: int, job: _Job) -> None:
        live = [slot for slot, entry in enumerate(self.analysers) if entry is not None]
        if not live:
            self._lost(job, "no analysis process is left")
            return
        slot = min(live, key=lambda s: len(self.in_hand[s]))
        job.tries += 1
        self.in_hand[slot][job_id] = job
        entry = self.analysers[slot]
        assert entry is not None
        try:
            entry[1].send(("job", job_id, job.spool, job.scenario, job.tags, job.stem))
        except (OSError, EOFError, BrokenPipeError):
            pass  # its sentinel tells; the job is handed on then

    def _drain_analysis(self, slot: int, *, to_eof: bool = False) -> None:
        entry = self.analysers[slot]
        assert entry is not None
        conn = entry[1]
        try:
            while to_eof or conn.poll():
                message = conn.recv()
                kind = message[0]
                if kind == "record":
                    job = self.in_hand[slot].pop(message[1], None)
                    if job is not None:
                        self._record(job, message[2])
                elif kind == "lost":
                    job = self.in_hand[slot].pop(message[1], None)
                    if job is not None:
                        self._lost(job, message[2])
                elif kind == "fatal":
                    self.errors[-1 - slot] = message[1]
        except (EOFError, OSError):
            pass

    def _analyser_died(self, slot: int) -> None:
        """Its calls in hand go to a new analysis process (their spool files are still there),
        once; a call whose analysis failed twice is lost."""
        entry = self.analysers[slot]
        assert entry is not None
        entry[0].join(timeout=5)
        entry[1].close()
        self.analysers[slot] = None
        jobs, self.in_hand[slot] = self.in_hand[slot], {}
        why = self.errors.get(-1 - slot) or f"exit code {entry[0].exitcode}"
        retry = [(job_id, job) for job_id, job in jobs.items() if job.tries < ANALYSIS_TRIES]
        for job in jobs.values():
            if job.tries >= ANALYSIS_TRIES:
                self._lost(job, f"its analysis process stopped twice ({why})")
        if retry and self._sigints < 2:
            self._start_analyser(slot)
            for job_id, job in retry:
                self._give(job_id, job)
        else:
            for _, job in retry:
                self._lost(job, f"its analysis process stopped ({why})")

    def _record(self, job: _Job, record: dict[str, Any]) -> None:
        record = self.folder.write_record(job.stem, record)
        self.tally.add(record)
        self.state.finished += 1
        self.state.record(record)
        level = record.get("tags", {}).get("step")
        if level is not None:
            self._ended(job.worker, level, record)
        if self.on_call:
            self.on_call(record, self.folder.path)

    def _lost(self, job: _Job, reason: str) -> None:
        self.lost.append(reason)
        self.state.finished += 1
        Path(job.spool).unlink(missing_ok=True)
        self._ended(job.worker, job.tags.get("step"), None)

    def _ended(self, w: int, level: int | None, record: dict[str, Any] | None) -> None:
        if level is None:
            return
        self.ended_by[w][level] = self.ended_by[w].get(level, 0) + 1
        if self.step is not None:
            self.step.ended(level, record)

    def _acked(self, w: int, level: int) -> None:
        waiting = self.pending_acks.get(level)
        if waiting is None:
            return
        waiting.discard(w)
        if not waiting:
            del self.pending_acks[level]
            if self.step is not None:
                self.step.close(level)

    def _exited(self, w: int) -> None:
        proc = self.procs[w]
        proc.join(timeout=5)
        self.alive.discard(w)
        in_flight = self.counters[SLOTS * w + _IN_FLIGHT]
        self.counters[SLOTS * w + _IN_FLIGHT] = 0
        if w in self.done and proc.exitcode == 0:
            return
        if w in self._stopped_by_user:
            for _ in range(in_flight):  # accounted for, as lost calls: nothing of them was handed over
                self.lost.append(f"a call of worker {w} in flight: the run was stopped (a second Ctrl-C)")
            return
        calls = self.calls_by[w]
        why = self.errors.get(w) or f"exit code {proc.exitcode}"
        if w not in self.ready:
            where = "before it was ready"
        else:
            where = f"after {calls} call{'s' if calls != 1 else ''}"
        lost = f"; {in_flight} call{'s' if in_flight != 1 else ''} in flight lost" if in_flight else ""
        message = (
            f"worker {w} of {len(self.specs)} stopped ({why}) {where}{lost}; "
            "its finished calls are kept, the other workers go on"
        )
        self.failed.append(
            {
                "worker": w,
                "exit_code": proc.exitcode,
                "calls": calls,
                "lost_in_flight": in_flight,
                "message": message,
            }
        )
        # Its calls that started but were never handed over are lost for step mode's verdicts,
        # and it will not acknowledge any level.
        handed = {level: 0 for level in self.started_by[w]}
        for jobs in self.in_hand:
            for job in jobs.values():
                if job.worker == w and job.tags.get("step") in handed:
                    handed[job.tags["step"]] += 1
        for level, started in self.started_by[w].items():
            for _ in range(started - self.ended_by[w].get(level, 0) - handed.get(level, 0)):
                self._ended(w, level, None)
        for level in list(self.pending_acks):
            self._acked(w, level)
        if self.on_worker_failed:
            self.on_worker_failed(message)

    def _refresh(self) -> None:
        """The live view's counts: the workers' shared counters, summed."""
        c = self.counters
        n = len(self.specs)
        self.state.started = sum(c[SLOTS * w + _STARTED] for w in range(n))
        self.state.in_flight = sum(c[SLOTS * w + _IN_FLIGHT] for w in range(n))
        dropped = sum(c[SLOTS * w + _DROPPED] for w in range(n))
        self.state.interrupted = sum(c[SLOTS * w + _INTERRUPTED] for w in range(n))
        self.state.dropped = dropped
        if self.on_drop:
            for d in range(self._dropped_seen + 1, dropped + 1):
                self.on_drop(d)
        self._dropped_seen = dropped

    # -- step mode ---------------------------------------------------------------------------------

    def _step_levels(self) -> None:
        if self.step is None:
            return
        level = self.step.level_at(time.monotonic() - self.t0)
        if level == self.level:
            return
        old, self.level = self.level, level
        alive = sorted(self.alive)
        for i, w in enumerate(alive):  # the survivors share the level if a worker died
            self._send(w, ("level", level, split_count(level, i, len(alive)) if level else 0))
        if old is not None:
            self.pending_acks[old] = set(alive)
            if not alive:
                self._acked(-1, old)


# ------------------------------------------------------------------------------------------------
# A pacing process


def worker_main(spec: WorkerSpec, conn: Connection, counters: Any, numbers: Any = None) -> None:
    """A pacing process's entry point: its share of the load on its own event loop."""
    for sig in STOP_SIGNALS:  # the parent decides; it sends "cancel" (see _start), or goes away
        signal.signal(sig, signal.SIG_IGN)
    outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
    sender = threading.Thread(target=_sender, args=(spec, conn, outbox), daemon=True)
    sender.start()
    code = 0
    try:
        import asyncio

        from uvbench.eventloop import fast_event_loop_factory

        profile = os.environ.get(PROFILE_ENV)
        profiler = None
        if profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        with asyncio.Runner(loop_factory=fast_event_loop_factory()) as runner:
            runner.run(_work(spec, conn, counters, outbox, numbers))
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(f"{profile}.pacing{spec.worker}")
        outbox.put(("done", spec.worker))
    except BaseException as exc:  # reported to the parent, which tells the user in one line
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        outbox.put(("error", spec.worker, last))
        code = 1
    outbox.put(None)
    sender.join()
    conn.close()
    os._exit(code)  # skip interpreter teardown: nothing is left to flush


def _sender(spec: WorkerSpec, conn: Connection, outbox: queue.SimpleQueue[Any]) -> None:
    """The worker's only writer to the pipe: the event loop never blocks on a send or a pickle."""
    handed = 0
    while True:
        message = outbox.get()
        if message is None:
            return
        try:
            conn.send(message)
        except (OSError, EOFError):
            return  # the parent is gone
        if message[0] == "raw":
            handed += 1
            if spec.crash_after is not None and handed >= spec.crash_after:
                os._exit(70)


class _RemoteLevels:
    """Step mode in a worker: the control of the profile `run_load` reads, set by the parent's
    level messages (this worker's share of the level, or stop)."""

    def __init__(self, total_s: float, tell: Callable[[tuple[Any, ...]], None], worker: int) -> None:
        self.tell = tell
        self.worker = worker
        self.level: int | None = None
        self.share = 0
        self.stopped = False
        self.profile = StepProfile(duration_s=total_s, control=self)

    def set_level(self, level: int | None, share: int) -> None:
        old, self.level, self.share = self.level, level, share
        self.stopped = level is None
        if old is not None and old != level:  # every start at `old` was told before this
            self.tell(("ack", self.worker, old))

    def target_at(self, t_s: float) -> int:
        return self.share

    def finished(self, t_s: float, started: int) -> bool:
        return self.stopped


class _WorkerHooks:
    """Run-wide tags and counters for each call a worker starts and ends (fanout.CallHooks)."""

    def __init__(self, spec: WorkerSpec, counters: Any, levels: _RemoteLevels | None, tell) -> None:
        self.w, self.n = spec.worker, spec.workers
        self.counters = counters
        self.levels = levels
        self.tell = tell

    def call_started(self, tags: dict[str, Any], state: RunState) -> None:
        c, base = self.counters, SLOTS * self.w
        c[base + _STARTED] = state.started
        c[base + _IN_FLIGHT] = state.in_flight
        tags["worker"] = self.w
        tags["vu"] = tags["vu"] * self.n + self.w
        tags["concurrency"] = sum(c[SLOTS * i + _IN_FLIGHT] for i in range(self.n))
        if self.levels is not None:
            tags["step"] = self.levels.level
            self.tell(("started", self.w, self.levels.level))

    def call_ended(self, tags: dict[str, Any], handed_over: Any, state: RunState) -> None:
        self.counters[SLOTS * self.w + _IN_FLIGHT] = state.in_flight
        self.counters[SLOTS * self.w + _INTERRUPTED] = state.interrupted
        if handed_over is None:  # it raised or was cancelled: nothing will be analysed
            self.tell(("lost", self.w, tags.get("step")))


class WireCaller:
    """What a pacing process does per call: the call on the wire (call/engine.py), then its raw
    data spooled for the analysis (analysis/spool.py). Returns the hand-over."""

    def __init__(
        self,
        scenarios: list[Scenario],
        endpoints: dict[str, Any],
        spool: Path,
        *,
        record: str | None = None,
        scenario_tags: dict[str, dict[str, Any]] | None = None,
        prefix: str = "",
        give_up_after_s: float | None = None,
        seed: int | None = None,
        attempts_per_process: bool = False,
    ) -> None:
        self.index = {id(s): i for i, s in enumerate(scenarios)}
        self.seed = seed
        self.attempts_per_process = attempts_per_process
        self.endpoints = endpoints
        self.spool = spool
        self.record = record
        self.scenario_tags = scenario_tags or {}
        self.prefix = prefix
        self.give_up_after_s = give_up_after_s
        self.apis: dict[Any, Any] = {}
        self._numbers = itertools.count(1)

    def api(self, endpoint: Any) -> Any:
        from uvbench.call.rest import UltravoxApi

        if endpoint not in self.apis:
            self.apis[endpoint] = UltravoxApi(
                endpoint.api_url, endpoint.api_key, give_up_after_s=self.give_up_after_s
            )
        return self.apis[endpoint]

    def gave_up(self) -> str | None:
        """The line of the first target every create has failed at for too long, if any."""
        return next((api.health.gave_up for api in self.apis.values() if api.health.gave_up), None)

    def call_identity(self, tags: dict[str, Any]) -> str:
        """The call among its scenario's calls, which seeds its noise start and impairment: its
        attempt, the scenario's start order (run-wide under `uvbench run` whichever process starts
        it, so a rerun gives the n-th call of a scenario the same seeds; the run-wide iteration
        would not, since which process starts first varies). Counted per process under locust,
        so the worker's index joins it there."""
        if self.attempts_per_process:
            return f"worker {tags.get('worker')} attempt {tags.get('attempt')}"
        return f"attempt {tags.get('attempt')}"

    async def warm(self, scenarios: list[Scenario]) -> None:
        """Cold-start work before the first call, not under the first calls' pacers: one HTTP
        client per endpoint for the whole run (making one costs tens of milliseconds of CPU, TLS
        setup) and the audio every call sends (runner/run.py `warm_audio`)."""
        import asyncio

        from uvbench.call.engine import warm_up
        from uvbench.runner.run import warm_audio

        warm_up()
        for endpoint in self.endpoints.values():
            await self.api(endpoint).open()
        await asyncio.to_thread(warm_audio, scenarios)

    async def run(
        self, scenario: Scenario, tags: dict[str, Any], hand_over: Callable[[dict[str, Any]], None]
    ) -> dict[str, Any]:
        """Run one call and hand it over (`hand_over(raw)`) for analysis; a call the run stops
        midway is handed over too, with what it measured, before the cancellation goes on."""
        from uvbench.analysis import spool
        from uvbench.call.engine import CallResult, run_call
        from uvbench.call.plan import plan_for
        from uvbench.call.script import ScriptRun, make_script

        tags = {**self.scenario_tags.get(scenario.name, {}), **tags}  # the runner's own tags win
        # How the caller sounded and what the uplink did, for figures per level (issue 14).
        if scenario.caller is not None:
            tags.setdefault("caller", scenario.caller_label)
        if scenario.network is not None:
            tags.setdefault("network", scenario.network_label)
        endpoint = self.endpoints[scenario.name]
        key = f"{self.prefix}{next(self._numbers)}"
        keep = self.record or scenario.client.record
        audio = self.spool / f"{key}.pcm" if keep != "none" else None
        plan = plan_for(
            scenario,
            endpoint,
            agent_audio_path=audio,
            run_seed=self.seed,
            call_identity=self.call_identity(tags),
        )

        def raw_of(result: CallResult) -> dict[str, Any]:
            path = self.spool / f"{key}.call"
            spool.save(result, path)
            # The call's objects sit in reference cycles (its socket, receiver and context point
            # at each other): emptied now, they are freed at once rather than by a full garbage
            # collection over every call in flight, which holds up the loop for tens of ms.
            result.timeline.clear()
            return {"spool": str(path), "scenario": self.index[id(scenario)], "tags": tags}

        result = await run_call(
            plan,
            make_script(scenario, ScriptRun()),
            api=self.api(endpoint),
            on_interrupted=lambda partial: hand_over(raw_of(partial)),
        )
        raw = raw_of(result)
        hand_over(raw)
        return raw

    async def close(self) -> None:
        for api in self.apis.values():
            await api.close()


def run_wide_numbers(numbers: Any, scenario: int) -> tuple[int, int]:
    """(iteration, attempt) of a call starting now in any pacing process: the run's start order
    from 0 and its scenario's from 1. Each process taking every W-th item of the run's order (as
    `run_load` splits it) would leave gaps as soon as one process starts more calls than another."""
    with numbers.get_lock():
        iteration = numbers[0]
        numbers[0] = iteration + 1
        numbers[1 + scenario] += 1
        return iteration, numbers[1 + scenario]


async def _work(
    spec: WorkerSpec, conn: Connection, counters: Any, outbox: queue.SimpleQueue[Any], numbers: Any = None
) -> None:
    import asyncio

    from uvbench.eventloop import settle_for_pacing
    from uvbench.runner.fanout import run_groups, run_load

    loop = asyncio.get_running_loop()
    caller = WireCaller(
        spec.scenarios,
        spec.endpoints,
        spec.spool,
        record=spec.record,
        scenario_tags=spec.scenario_tags,
        prefix=f"w{spec.worker}-",
        give_up_after_s=spec.give_up_after_s,
        seed=spec.seed,
    )
    tell = outbox.put
    levels = _RemoteLevels(spec.step_total_s, tell, spec.worker) if spec.step_total_s else None
    hooks = _WorkerHooks(spec, counters, levels, tell)
    state = RunState()
    go: asyncio.Future[float] = loop.create_future()
    main: list[asyncio.Task[Any]] = []
    stopping: list[str] = []

    def cancel(why: str | None = None) -> None:
        if not go.done():
            go.cancel()
        for task in main:
            task.cancel(why)

    def on_control() -> None:
        try:
            while conn.poll():
                message = conn.recv()
                if message[0] == "go" and not go.done():
                    go.set_result(message[1])
                elif message[0] == "level" and levels is not None:
                    levels.set_level(message[1], message[2])
                elif message[0] == "cancel":
                    if len(message) > 1 and not stopping:
                        stopping.append(message[1])
                    cancel(stopping[0] if stopping else None)
        except (EOFError, OSError):  # the parent is gone: stop
            loop.remove_reader(conn.fileno())
            cancel()

    async def run_one(scenario: Scenario, tags: dict[str, Any]) -> dict[str, Any]:
        if numbers is not None and spec.workers > 1:
            tags["iteration"], tags["attempt"] = run_wide_numbers(numbers, caller.index[id(scenario)])
        try:
            return await caller.run(scenario, tags, lambda raw: tell(("raw", spec.worker, raw)))
        finally:
            why = caller.gave_up()
            if why is not None and not stopping:  # this worker stops at once; the parent stops the others
                stopping.append(f"the run gave up: {why}")
                tell(("gave_up", spec.worker, why))
                cancel(stopping[0])

    def on_drop(dropped: int) -> None:
        counters[SLOTS * spec.worker + _DROPPED] = dropped

    await caller.warm(spec.scenarios)  # before the shared start instant, not under the first pacers
    settle_for_pacing()
    loop.add_reader(conn.fileno(), on_control)
    tell(("ready", spec.worker))
    try:
        try:
            t0 = await go
        except asyncio.CancelledError:
            return
        await asyncio.sleep(max(0.0, t0 - time.monotonic()))
        if spec.groups:
            load = run_groups(spec.groups, run_one, repeat=spec.repeat, seed=spec.seed, state=state,
                              on_drop=on_drop, hooks=hooks)  # fmt: skip
        else:
            load = run_load(
                spec.scenarios,
                levels.profile if levels is not None else spec.profile,
                run_one,
                repeat=spec.repeat,
                seed=spec.seed,
                state=state,
                on_drop=on_drop,
                hooks=hooks,
                worker=spec.worker,
                workers=spec.workers,
            )
        main.append(asyncio.create_task(load))
        try:
            await main[0]
        except asyncio.CancelledError:  # Ctrl-C in the parent, or a give-up: cancel the calls in flight
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel(stopping[0] if stopping else None)
            await asyncio.gather(*others, return_exceptions=True)
    finally:
        try:
            loop.remove_reader(conn.fileno())
        except (OSError, ValueError):
            pass
        await caller.close()
