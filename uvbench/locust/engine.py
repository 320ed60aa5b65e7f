"""The call engine of a locust process: the calls run here, on an asyncio loop in a process of its own.

Locust runs users as gevent greenlets, and a greenlet switch on every socket operation would
interrupt other calls' paced audio (gevent #1216). So each locust process (a worker, or locust
without workers) starts one engine: `python -m uvbench.locust.engine FD`, a child process with no
gevent in it, talking over the socket FD (`uvbench.locust.wire`). Here the calls are exactly those
of `uvbench run`: `run_call_of` on uvloop with the same process settings, and `write_call` into
the run folder. Greenlets only ask for calls and wait for their records (`uvbench.locust.bridge`).

Messages in:   ("configure", EngineSpec)   ("call", id, scenario index, tags)   ("cancel", id)
Messages out:  ("record", id, record)   ("lost", id, reason)   ("fatal", line)
A call's record is written to the run folder before it is sent; a call that raised or was
cancelled comes back as "lost" with the reason, never silently.
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
    """scenario name -> runner.run.Endpoint"""
    folder: Path
    stem_prefix: str = ""
    """Prefixes this process's call files (e.g. "w1-"), so several locust workers share one folder."""
    scenario_tags: dict[str, dict[str, Any]] = field(default_factory=dict)


class Engine:
    def __init__(self, outbox: queue.SimpleQueue[Any]) -> None:
        self.outbox = outbox
        self.spec: EngineSpec | None = None
        self.writer: Any = None
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
        from uvbench.report.run_folder import RunFolder
        from uvbench.runner.run import CallWriter

        self.configured.clear()
        try:
            self.spec = spec
            folder = RunFolder.attach(spec.folder, first=1, step=1, prefix=spec.stem_prefix)
            if self.writer is not None:  # a new test (the web UI): the last test's clients go
                await self.writer.close()
            self.writer = CallWriter(folder, spec.endpoints, spec.scenario_tags)
            await self.writer.warm(spec.scenarios)
        except Exception as exc:
            self.outbox.put(("fatal", f"the call engine could not start: {_line(exc)}"))
            return
        self.configured.set()

    async def call(self, call_id: int, index: int, tags: dict[str, Any]) -> None:
        try:
            await self.configured.wait()
            assert self.spec is not None
            # The engine's own count of calls in flight, this one included (the run's owner
            # replaces it with the run-wide count and keeps this one as worker_concurrency).
            tags = {**tags, "concurrency": len(self.calls)}
            record = await self.writer.run(self.spec.scenarios[index], tags)
            self.outbox.put(("record", call_id, record))
        except asyncio.CancelledError:
            self.outbox.put(("lost", call_id, "cancelled: locust stopped the user while its call ran"))
        except Exception as exc:
            self.outbox.put(("lost", call_id, _line(exc)))
        finally:
            self.calls.pop(call_id, None)

    async def close(self) -> None:
        for task in list(self.calls.values()):
            task.cancel()
        await asyncio.gather(*self.calls.values(), return_exceptions=True)
        if self.writer is not None:
            await self.writer.close()


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


async def _serve(sock: socket.socket, outbox: queue.SimpleQueue[Any]) -> None:
    engine = Engine(outbox)
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
    sock.setblocking(True)
    outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
    sender = threading.Thread(target=_sender, args=(sock, outbox), daemon=True)
    sender.start()
    code = 0
    try:
        # The modules a call needs, imported before the settings below freeze them in place.
        import uvbench.runner.run  # noqa: F401
        from uvbench.eventloop import fast_event_loop_factory, settle_for_pacing

        settle_for_pacing()
        with asyncio.Runner(loop_factory=fast_event_loop_factory()) as runner:
            runner.run(_serve(sock, outbox))
    except BaseException as exc:
        outbox.put(("fatal", f"the call engine stopped: {_line(exc)}"))
        code = 1
    outbox.put(None)
    sender.join(timeout=5)
    sock.close()
    os._exit(code)  # skip interpreter teardown: nothing is left to flush


if __name__ == "__main__":
    main()
