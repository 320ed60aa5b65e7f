"""An analysis process: finished calls in, records out (uvbench.analysis.call for each).

It runs beside the pacing processes and never on their cores' critical path: at a lower CPU
priority (nice +5), so that when the machine is short of CPU the processes pacing live audio (and
a local server) go first and the analysis catches up afterwards from its spool.

Messages in:   ("job", job_id, spool_path, scenario_index, tags, stem)   ("stop",)
               ("configure", AnalysisSpec)   (when it was not given at start)
Messages out:  ("record", job_id, record, files)   ("lost", job_id, reason)   ("fatal", line)
`files` is None when the files were written into the run folder (`spec.folder`), else the
files' bytes by suffix, for the run folder's owner to write (a locust worker's calls, whose run
folder is on the master's machine). A job whose analysis raised comes back "lost" with the
reason in one line; the process goes on with the next. Several jobs are in progress at once
(reading a call back waits on the API), their CPU work one after the other.

Two ways in: `analysis_main(spec, conn)` for a multiprocessing child (uvbench run: one
connection both ways to the run's coordinator), and `python -m uvbench.analysis.worker IN [OUT]`
with socket descriptors (locust: jobs from the call engine, records to the locust process).
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import signal
import socket
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

NICE = 5
CONCURRENT_JOBS = 32


@dataclass
class AnalysisSpec:
    scenarios: list[Any]
    """uvbench Scenario objects; jobs name them by index."""
    endpoints: dict[str, Any]
    """scenario name -> call.plan.Endpoint"""
    folder: Path | None
    """The run folder: the files go into its calls/ under the job's stem. None: returned as bytes."""
    record: str | None = None
    """Overrides every scenario's `client.record` policy ("all", "failed", "none")."""


class Analyser:
    """The jobs of one analysis process, on its event loop."""

    def __init__(self, spec: AnalysisSpec, send: Any) -> None:
        self.spec = spec
        self.send = send
        self.apis: dict[Any, Any] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.slots = asyncio.Semaphore(CONCURRENT_JOBS)

    def api(self, endpoint: Any) -> Any:
        from uvbench.call.rest import UltravoxApi

        if endpoint not in self.apis:
            self.apis[endpoint] = UltravoxApi(endpoint.api_url, endpoint.api_key)
        return self.apis[endpoint]

    def submit(
        self, job_id: Any, spool_path: str, index: int, tags: dict[str, Any], stem: str | None
    ) -> None:
        task = asyncio.get_running_loop().create_task(self.run(job_id, Path(spool_path), index, tags, stem))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def run(
        self, job_id: Any, spool_path: Path, index: int, tags: dict[str, Any], stem: str | None
    ) -> None:
        from uvbench.analysis import spool
        from uvbench.analysis.call import BytesSink, FolderSink, analyse_call
        from uvbench.call.plan import plan_for

        async with self.slots:
            try:
                scenario = self.spec.scenarios[index]
                endpoint = self.spec.endpoints[scenario.name]
                result = spool.load(spool_path, plan_for(scenario, endpoint))
                folder = self.spec.folder
                sink = FolderSink(folder / "calls", stem or f"call-{job_id}") if folder else BytesSink()
                record, _, _ = await analyse_call(
                    result,
                    scenario,
                    endpoint.label,
                    self.api(endpoint),
                    sink,
                    tags=tags,
                    record=self.spec.record,
                )
                self.send(("record", job_id, record, getattr(sink, "files", None)))
            except Exception as exc:  # this call only; the next job goes on
                log.exception("analysis of a call failed")
                self.send(("lost", job_id, f"analysis failed: {_line(exc)}"))
            finally:
                spool_path.unlink(missing_ok=True)

    async def close(self) -> None:
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        for api in self.apis.values():
            await api.close()


def _line(exc: BaseException) -> str:
    return traceback.format_exception_only(type(exc), exc)[-1].strip()


async def _serve(spec: AnalysisSpec | None, receive: Any, outbox: queue.SimpleQueue[Any]) -> None:
    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()
    configured = asyncio.Event()
    state: dict[str, Any] = {"analyser": None}
    pending: list[tuple[Any, ...]] = []

    def configure(new: AnalysisSpec) -> None:
        state["analyser"] = Analyser(new, outbox.put)
        configured.set()
        for message in pending:
            handle(message)
        pending.clear()

    def handle(message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "configure":
            configure(message[1])
        elif kind == "stop":
            stopped.set()
        elif kind == "job":
            if state["analyser"] is None:
                pending.append(message)
            else:
                state["analyser"].submit(*message[1:])

    def read() -> None:  # blocking reads in a thread of their own
        while True:
            try:
                message = receive()
            except (EOFError, OSError):
                loop.call_soon_threadsafe(stopped.set)
                return
            loop.call_soon_threadsafe(handle, message)

    if spec is not None:
        configure(spec)
    threading.Thread(target=read, daemon=True).start()
    await stopped.wait()
    if state["analyser"] is not None:
        await state["analyser"].close()


def _write(send: Any, outbox: queue.SimpleQueue[Any]) -> None:
    """The only writer to the coordinator: the loop never blocks on a send or a pickle."""
    while (message := outbox.get()) is not None:
        try:
            send(message)
        except (OSError, EOFError):
            return


def _run(spec: AnalysisSpec | None, receive: Any, send: Any) -> int:
    for sig in (signal.SIGINT, signal.SIGTERM):  # the coordinator decides when to stop
        signal.signal(sig, signal.SIG_IGN)
    try:
        os.nice(NICE)
    except OSError:
        pass
    outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
    writer = threading.Thread(target=_write, args=(send, outbox), daemon=True)
    writer.start()
    code = 0
    try:
        from uvbench.eventloop import fast_event_loop_factory

        with asyncio.Runner(loop_factory=fast_event_loop_factory()) as runner:
            runner.run(_serve(spec, receive, outbox))
    except BaseException as exc:
        outbox.put(("fatal", f"the analysis process stopped: {_line(exc)}"))
        code = 1
    outbox.put(None)
    writer.join(timeout=10)
    return code


def analysis_main(spec: AnalysisSpec, conn: Any) -> None:
    """A multiprocessing child's entry point: one connection both ways."""
    code = _run(spec, conn.recv, conn.send)
    conn.close()
    os._exit(code)  # skip interpreter teardown: nothing is left to flush


def main(argv: list[str] | None = None) -> None:
    """`python -m uvbench.analysis.worker IN [OUT]`: jobs on socket IN, records on OUT (or IN)."""
    from uvbench.locust import wire

    argv = sys.argv[1:] if argv is None else argv
    inbox = socket.socket(fileno=int(argv[0]))
    outbox = socket.socket(fileno=int(argv[1])) if len(argv) > 1 else inbox
    for sock in {inbox, outbox}:
        sock.setblocking(True)
    code = _run(None, lambda: wire.receive(inbox), lambda message: wire.send(outbox, message))
    os._exit(code)


if __name__ == "__main__":
    main()
