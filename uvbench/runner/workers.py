"""`uvbench run --workers N`: the load driven by N worker processes, merged into one run folder.

One event loop paces every call's audio; past some tens of concurrent calls a single loop (and the
interpreter lock) cannot keep every pacer on time. Each worker is a separate process with its own
event loop (uvloop where installed) running the same fan-out runner on its share of the load:

- The parent resolves targets once (it starts the local server, once) and gives the workers the
  endpoints (url, key); workers never start servers.
- `LoadProfile.share` splits the profile: concurrency, stage targets, iterations and the open
  model's arrival rate and cap; worker w takes items w, w+W, ... of the run's work order (so the
  scenario mix and the iteration numbers are those of one process) and, open model, the run's
  arrivals w, w+W, ... at their own times. All workers start on one shared CLOCK_MONOTONIC instant,
  after every one of them has imported and said ready (process start costs about a second).
- Workers run calls with `run_call_of` and `write_call`, writing call files straight into the run
  folder under worker-distinct numbers (worker w of W: w+1, w+1+W, ...), and send each record
  to the parent over a pipe. The parent alone appends results.jsonl (no interleaved lines), folds
  the record into `RunState` (the live view) and calls `on_call`, as the one-process path does.
- Tags: `worker` is added; `vu` and `iteration` are made run-wide (local*W + w); `concurrency` is
  the run's calls in flight once the call started, itself included: every worker publishes its own
  count in a shared-memory array (one slot per worker, written only by it) and sums all slots at
  each start. That is exact except for starts in two processes within the same microseconds,
  which may each miss the other.
- Ctrl-C: the parent asks the workers to cancel their calls and waits for them (workers ignore
  SIGINT themselves); what finished stays, `interrupted` says so.
- A worker that dies does not stop the run: its finished calls stay, the parent prints one line
  (`on_worker_failed`), summary.json lists it under `workers.failed`, and the exit code is 3 (the
  asked load was not delivered).
- Step mode: the parent owns the `Stepper` (it decides levels) and sends each worker its share of
  the level; workers tell it each start and acknowledge each level change, so a level is judged
  only once no worker can start another call at it.

Processes start with the "spawn" context: the parent may have threads (the live view), which fork
would copy in whatever state they were in.
"""

from __future__ import annotations

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

from uvbench.report.run_folder import RunFolder
from uvbench.runner.fanout import RunState
from uvbench.runner.load import LoadProfile, split_count, whole_profile
from uvbench.runner.run import Endpoint, RunSummary, Targets, _summary
from uvbench.runner.step import Stepper, StepProfile
from uvbench.scenario import Scenario

FAULT_ENV = "UVBENCH_TEST_WORKER_EXIT"
"""Test hook: "W:N" makes worker W exit (code 70, no cleanup) right after sending its N-th record."""
STARTUP_TIMEOUT_S = 60.0
CANCEL_TIMEOUT_S = 15.0
_STARTED, _IN_FLIGHT, _DROPPED, _INTERRUPTED = range(4)
SLOTS = 4
"""Slots per worker in the shared counters array (each written only by its worker)."""


@dataclass
class WorkerSpec:
    """What a worker process needs (pickled once at spawn)."""

    worker: int
    workers: int
    scenarios: list[Scenario]
    endpoints: dict[str, Endpoint]
    profile: LoadProfile | None
    """Its share of the load; None in step mode (the parent sends levels)."""
    step_total_s: float | None
    repeat: int
    seed: int | None
    folder: Path
    scenario_tags: dict[str, dict[str, Any]] | None = None


# ------------------------------------------------------------------------------------------------
# The parent


def run_workers(
    scenarios: list[Scenario],
    out_dir: Path,
    name: str,
    *,
    workers: int,
    profile: LoadProfile | None = None,
    step: Stepper | None = None,
    repeat: int = 1,
    seed: int | None = None,
    on_call: Callable[[dict[str, Any], Path], None] | None = None,
    on_drop: Callable[[int], None] | None = None,
    on_worker_failed: Callable[[str], None] | None = None,
    state: RunState | None = None,
    local_server_config: dict[str, Any] | None = None,
    scenario_tags: dict[str, dict[str, Any]] | None = None,
) -> RunSummary:
    """`run_scenarios` with the calls in `workers` processes; the same run folder and summary."""
    folder = RunFolder(out_dir, name)
    targets = Targets(local_server_config)
    state = state or RunState()
    fleet: _Fleet | None = None
    try:
        endpoints = {s.name: targets.endpoint(s) for s in scenarios}
        if step is not None:
            count = max(1, min(workers, step.plan.max))
            shares: list[LoadProfile | None] = [None] * count
        else:
            whole = whole_profile(profile, len(scenarios) * repeat)
            count = whole.useful_workers(workers)
            shares = [whole.share(w, count) for w in range(count)]
            assert all(shares), "useful_workers leaves no worker without a share"
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
                folder=folder.path,
                scenario_tags=scenario_tags,
            )
            for w in range(count)
        ]
        fleet = _Fleet(specs, folder, state, step, on_call, on_drop, on_worker_failed)
        fleet.run()
    finally:
        if fleet is not None:
            fleet.shutdown()
        targets.close()  # after the workers: their calls need the local server to the end
        records = fleet.records if fleet else []
        summary = {
            **_summary(records),
            "dropped_calls": state.dropped,
            "interrupted_calls": state.interrupted,
            "interrupted": bool(fleet and fleet.interrupted),
            "workers": {"count": len(fleet.specs) if fleet else 0, "failed": fleet.failed if fleet else []},
        }
        folder.write_summary(summary)
        folder.close()
    return RunSummary(
        folder.path, records, fleet.interrupted, worker_failures=[f["message"] for f in fleet.failed]
    )


class _Fleet:
    """The parent's side: starts the workers, merges what they send, steps levels, stops them."""

    def __init__(
        self,
        specs: list[WorkerSpec],
        folder: RunFolder,
        state: RunState,
        step: Stepper | None,
        on_call: Callable[[dict[str, Any], Path], None] | None,
        on_drop: Callable[[int], None] | None,
        on_worker_failed: Callable[[str], None] | None,
    ) -> None:
        self.specs = specs
        self.folder = folder
        self.state = state
        self.step = step
        self.on_call = on_call
        self.on_drop = on_drop
        self.on_worker_failed = on_worker_failed
        self.records: list[dict[str, Any]] = []
        self.failed: list[dict[str, Any]] = []
        self.interrupted = False
        self._sigints = 0
        n = len(specs)
        self._ctx = multiprocessing.get_context("spawn")
        self.counters = self._ctx.Array("q", SLOTS * n, lock=False)
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

    # -- lifecycle -------------------------------------------------------------------------------

    def run(self) -> None:
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            self._start()
            self._wait_ready()
            self._go()
            self._loop()
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self._sigints += 1

    def _start(self) -> None:
        # Children started while SIGINT is ignored keep ignoring it from their first instruction
        # (Python installs its KeyboardInterrupt handler only over the default disposition), so a
        # Ctrl-C at the terminal, sent to the whole process group, reaches only the parent.
        main_thread = threading.current_thread() is threading.main_thread()
        handler = signal.signal(signal.SIGINT, signal.SIG_IGN) if main_thread else None
        try:
            self._spawn()
        finally:
            if handler is not None:
                signal.signal(signal.SIGINT, handler)

    def _spawn(self) -> None:
        for spec in self.specs:
            parent_end, child_end = self._ctx.Pipe(duplex=True)
            proc = self._ctx.Process(
                target=worker_main,
                args=(spec, child_end, self.counters),
                name=f"uvbench-worker-{spec.worker}",
                daemon=True,
            )
            proc.start()
            child_end.close()
            self.procs.append(proc)
            self.conns.append(parent_end)
            self.alive.add(spec.worker)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while self.alive - self.ready:
            if self._sigints:
                return
            if time.monotonic() > deadline:
                for w in sorted(self.alive - self.ready):
                    self.procs[w].terminate()
            self._poll(0.1)

    def _go(self) -> None:
        if self._sigints:
            return
        self.t0 = time.monotonic() + 0.02  # one start instant for all (CLOCK_MONOTONIC is system-wide)
        self.state.t0 = self.t0
        for w in sorted(self.alive):
            self._send(w, ("go", self.t0))
        self._step_levels()

    def _loop(self) -> None:
        cancelled_at: float | None = None
        while self.alive:
            if self._sigints and cancelled_at is None:
                self.interrupted = True
                cancelled_at = time.monotonic()
                for w in sorted(self.alive):
                    self._send(w, ("cancel",))
            late = cancelled_at is not None and time.monotonic() - cancelled_at > CANCEL_TIMEOUT_S
            if late or self._sigints > 1:  # a second Ctrl-C: stop waiting for them
                for w in sorted(self.alive):
                    self.procs[w].terminate()
            self._poll(0.05)
            if cancelled_at is None:
                self._step_levels()

    def shutdown(self) -> None:
        """Make sure no worker outlives the run (normally they have all exited by now)."""
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
        for proc in self.procs:
            proc.join(timeout=5)
        for conn in self.conns:
            conn.close()

    # -- messages ----------------------------------------------------------------------------------

    def _send(self, w: int, message: tuple[Any, ...]) -> None:
        try:
            self.conns[w].send(message)
        except (OSError, EOFError, BrokenPipeError):
            pass  # the worker is gone; its sentinel tells

    def _poll(self, timeout: float) -> None:
        waitables: dict[Any, int] = {}
        for w in self.alive:
            waitables[self.conns[w]] = w
            waitables[self.procs[w].sentinel] = w
        if not waitables:
            return
        for ready in wait(list(waitables), timeout):
            w = waitables[ready]
            if w not in self.alive:
                continue
            if ready is self.conns[w]:
                self._drain(w)
            else:  # the process ended: first read what it sent before it did
                self._drain(w, to_eof=True)
                self._exited(w)
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
        if kind == "record":
            self._record(w, message[2])
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

    def _record(self, w: int, record: dict[str, Any]) -> None:
        self.folder.append_result(record)
        self.records.append(record)
        self.calls_by[w] += 1
        self.state.finished += 1
        self.state.record(record)
        level = record.get("tags", {}).get("step")
        if level is not None:
            self._ended(w, level, record)
        if self.on_call:
            self.on_call(record, self.folder.path)

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
        # Its calls that started but never ended are lost for step mode's verdicts, and it will
        # not acknowledge any level.
        for level, started in self.started_by[w].items():
            for _ in range(started - self.ended_by[w].get(level, 0)):
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
# A worker


def worker_main(spec: WorkerSpec, conn: Connection, counters: Any) -> None:
    """A worker process's entry point: its share of the load on its own event loop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; it sends "cancel" (see _start)
    outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
    sender = threading.Thread(target=_sender, args=(spec.worker, conn, outbox), daemon=True)
    sender.start()
    code = 0
    try:
        import asyncio

        from uvbench.eventloop import fast_event_loop_factory, settle_for_pacing

        settle_for_pacing()
        with asyncio.Runner(loop_factory=fast_event_loop_factory()) as runner:
            runner.run(_work(spec, conn, counters, outbox))
        outbox.put(("done", spec.worker))
    except BaseException as exc:  # reported to the parent, which tells the user in one line
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        outbox.put(("error", spec.worker, last))
        code = 1
    outbox.put(None)
    sender.join()
    conn.close()
    os._exit(code)  # skip interpreter teardown: nothing is left to flush


def _sender(worker: int, conn: Connection, outbox: queue.SimpleQueue[Any]) -> None:
    """The worker's only writer to the pipe: the event loop never blocks on a send or a pickle."""
    fault = os.environ.get(FAULT_ENV, "")
    crash_after = None
    if fault:
        target, _, after = fault.partition(":")
        if target == str(worker):
            crash_after = int(after or 1)
    records = 0
    while True:
        message = outbox.get()
        if message is None:
            return
        try:
            conn.send(message)
        except (OSError, EOFError):
            return  # the parent is gone
        if message[0] == "record":
            records += 1
            if crash_after is not None and records >= crash_after:
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
        tags["iteration"] = tags["iteration"] * self.n + self.w
        tags["concurrency"] = sum(c[SLOTS * i + _IN_FLIGHT] for i in range(self.n))
        if self.levels is not None:
            tags["step"] = self.levels.level
            self.tell(("started", self.w, self.levels.level))

    def call_ended(self, tags: dict[str, Any], record: dict[str, Any] | None, state: RunState) -> None:
        self.counters[SLOTS * self.w + _IN_FLIGHT] = state.in_flight
        self.counters[SLOTS * self.w + _INTERRUPTED] = state.interrupted
        if record is None:  # it raised or was cancelled: no record will come
            self.tell(("lost", self.w, tags.get("step")))


async def _work(spec: WorkerSpec, conn: Connection, counters: Any, outbox: queue.SimpleQueue[Any]) -> None:
    import asyncio

    from uvbench.runner.fanout import run_load
    from uvbench.runner.run import CallWriter

    loop = asyncio.get_running_loop()
    writer = CallWriter(
        RunFolder.attach(spec.folder, first=spec.worker + 1, step=spec.workers),
        spec.endpoints,
        spec.scenario_tags,
    )
    tell = outbox.put
    levels = _RemoteLevels(spec.step_total_s, tell, spec.worker) if spec.step_total_s else None
    hooks = _WorkerHooks(spec, counters, levels, tell)
    state = RunState()
    go: asyncio.Future[float] = loop.create_future()
    main: list[asyncio.Task[Any]] = []

    def cancel() -> None:
        if not go.done():
            go.cancel()
        for task in main:
            task.cancel()

    def on_control() -> None:
        try:
            while conn.poll():
                message = conn.recv()
                if message[0] == "go" and not go.done():
                    go.set_result(message[1])
                elif message[0] == "level" and levels is not None:
                    levels.set_level(message[1], message[2])
                elif message[0] == "cancel":
                    cancel()
        except (EOFError, OSError):  # the parent is gone: stop
            loop.remove_reader(conn.fileno())
            cancel()

    async def run_one(scenario: Scenario, tags: dict[str, Any]) -> dict[str, Any]:
        record = await writer.run(scenario, tags)
        tell(("record", spec.worker, record))
        return record

    def on_drop(dropped: int) -> None:
        counters[SLOTS * spec.worker + _DROPPED] = dropped

    await writer.warm(spec.scenarios)  # before the shared start instant, not under the first pacers
    loop.add_reader(conn.fileno(), on_control)
    tell(("ready", spec.worker))
    try:
        try:
            t0 = await go
        except asyncio.CancelledError:
            return
        await asyncio.sleep(max(0.0, t0 - time.monotonic()))
        profile = levels.profile if levels is not None else spec.profile
        main.append(
            asyncio.create_task(
                run_load(
                    spec.scenarios,
                    profile,
                    run_one,
                    repeat=spec.repeat,
                    seed=spec.seed,
                    state=state,
                    on_drop=on_drop,
                    hooks=hooks,
                    worker=spec.worker,
                    workers=spec.workers,
                )
            )
        )
        try:
            await main[0]
        except asyncio.CancelledError:  # Ctrl-C in the parent: cancel the calls in flight too
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
    finally:
        try:
            loop.remove_reader(conn.fileno())
        except (OSError, ValueError):
            pass
        await writer.close()
