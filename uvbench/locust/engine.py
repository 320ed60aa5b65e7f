"""The call engine of a locust process: the calls run here, on an asyncio loop in a process of its own.

Locust runs users as gevent greenlets, and a greenlet switch on every socket operation would
interrupt other calls' paced audio (gevent #1216). So each locust process (a worker, or locust
without workers) starts one engine: `python -m uvbench.locust.engine FD JOBS SPOOL`, a child process
with no gevent in it, talking to locust over the socket FD (`uvbench.locust.wire`). Here the calls
are exactly those of a `uvbench run` pacing process: on the wire only (`WireCaller`, on uvloop
with the same process settings); each finished call is spooled and handed over on JOBS to the
analysis process, which sends its record to locust (`uvbench.locust.bridge`).

Messages in:   ("configure", EngineSpec)   ("call", id, scenario index, tags)   ("cancel", id)
Messages out:  ("lost", id, reason)   ("fatal", line)          on JOBS: ("job", ...), ("configure", ...)
A call that raised or was cancelled comes back as "lost" with the reason, never silently.
"""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import socket
import sys
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uvbench.locust import wire


@dataclass
class EngineSpec:
    """What the engine needs for a test (pickled once per test start)."""

    scenarios: list[Any]
    """uvbench Scenario objects; calls name them by index."""
    endpoints: dict[str, Any]
    """scenario name -> call.plan.Endpoint"""
    scenario_tags: dict[str, dict[str, Any]] = field(default_factory=dict)
    record: str | None = None
    """Overrides every scenario's `client.record`."""


class Engine:
    def __init__(self, outbox: queue.SimpleQueue[Any], jobs: queue.SimpleQueue[Any], spool: Path) -> None:
        self.outbox = outbox
        self.jobs = jobs
        self.spec: EngineSpec | None = None
        self.caller: Any = None
        self.spool = spool
        self.configured = asyncio.Event()
        self.calls: dict[int, asyncio.Task[None]] = {}
        self.stopped = asyncio.Event()

    def handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "call":
            _, call_id, index, tags = message
            self.calls[call_id] = asyncio.create_task(self.call(call_id, index, tags))
        elif kind == "cancel":
            task = self.calls.get(message[1])
            if task is not None:
                task.cancel()
        elif kind == "configure":
            asyncio.create_task(self.configure(message[1]))
        elif kind == "stop":
            self.stopped.set()

    async def configure(self, spec: EngineSpec) -> None:
        from uvbench.analysis.worker import AnalysisSpec
        from uvbench.eventloop import settle_for_pacing
        from uvbench.runner.workers import WireCaller

        self.configured.clear()
        try:
            self.spec = spec
            if self.caller is not None:  # a new test (the web UI): the last test's clients go
                await self.caller.close()
            self.caller = WireCaller(
                spec.scenarios,
                spec.endpoints,
                self.spool,
                record=spec.record,
                scenario_tags=spec.scenario_tags,
                attempts_per_process=True,  # each locust process counts its own calls
            )
            # The analysis sends files back as bytes: the run folder is the master's, maybe elsewhere.
            self.jobs.put(("configure", AnalysisSpec(spec.scenarios, spec.endpoints, None, spec.record)))
            await self.caller.warm(spec.scenarios)
            settle_for_pacing()
        except Exception as exc:
            self.outbox.put(("fatal", f"the call engine could not start: {_line(exc)}"))
            return
        self.configured.set()

    async def call(self, call_id: int, index: int, tags: dict[str, Any]) -> None:
        handed: list[dict[str, Any]] = []
        try:
            await self.configured.wait()
            assert self.spec is not None
            # The engine's own count of calls in flight, this one included (the run's owner
            # replaces it with the run-wide count and keeps this one as worker_concurrency).
            tags = {**tags, "concurrency": len(self.calls)}

            def hand_over(raw: dict[str, Any]) -> None:  # a call stopped midway comes here too
                handed.append(raw)
                self.jobs.put(("job", call_id, raw["spool"], raw["scenario"], raw["tags"], None))

            await self.caller.run(self.spec.scenarios[index], tags, hand_over)
        except asyncio.CancelledError:
            if not handed:
                self.outbox.put(("lost", call_id, "cancelled: locust stopped the user while its call ran"))
        except Exception as exc:
            self.outbox.put(("lost", call_id, _line(exc)))
        finally:
            self.calls.pop(call_id, None)

    async def close(self) -> None:
        for task in list(self.calls.values()):
            task.cancel()
        await asyncio.gather(*self.calls.values(), return_exceptions=True)
        if self.caller is not None:
            await self.caller.close()


def _line(exc: BaseException) -> str:
    return traceback.format_exception_only(type(exc), exc)[-1].strip()


def _reader(sock: socket.socket, loop: asyncio.AbstractEventLoop, engine: Engine) -> None:
    """Blocking reads in a thread of their own; each message is handed to the loop."""
    while True:
        try:
            message = wire.receive(sock)
        except (OSError, EOFError):  # the locust process is gone: stop
            loop.call_soon_threadsafe(engine.stopped.set)
            return
        loop.call_soon_threadsafe(engine.handle, message)


def _sender(sock: socket.socket, outbox: queue.SimpleQueue[Any]) -> None:
    """The only writer of the socket: the loop never blocks on a send or a pickle."""
    while (message := outbox.get()) is not None:
        try:
            wire.send(sock, message)
        except OSError:
            return


async def _serve(
    sock: socket.socket, outbox: queue.SimpleQueue[Any], jobs: queue.SimpleQueue[Any], spool: Path
) -> None:
    engine = Engine(outbox, jobs, spool)
    threading.Thread(target=_reader, args=(sock, asyncio.get_running_loop(), engine), daemon=True).start()
    try:
        await engine.stopped.wait()
    finally:
        await engine.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Ctrl-C reaches the whole process group; locust decides what stops, and says so with "stop".
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=int(argv[0]))
    jobs_sock = socket.socket(fileno=int(argv[1]))
    for each in (sock, jobs_sock):
        each.setblocking(True)
    outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
    jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
    sender = threading.Thread(target=_sender, args=(sock, outbox), daemon=True)
    sender.start()
    job_sender = threading.Thread(target=_sender, args=(jobs_sock, jobs), daemon=True)
    job_sender.start()
    code = 0
    try:
        # The modules a call needs, imported before the settings below freeze them in place.
        import uvbench.runner.workers  # noqa: F401
        from uvbench.eventloop import fast_event_loop_factory

        with asyncio.Runner(loop_factory=fast_event_loop_factory()) as runner:
            runner.run(_serve(sock, outbox, jobs, Path(argv[2])))
    except BaseException as exc:
        outbox.put(("fatal", f"the call engine stopped: {_line(exc)}"))
        code = 1
    outbox.put(None)
    jobs.put(None)  # the analysis finishes what it has, then exits
    sender.join(timeout=5)
    job_sender.join(timeout=5)
    sock.close()
    jobs_sock.close()
    os._exit(code)  # skip interpreter teardown: nothing is left to flush


if __name__ == "__main__":
    main()
