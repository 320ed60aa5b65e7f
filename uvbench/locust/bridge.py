"""The locust side of the call engine: greenlets ask for calls and wait for their records.

`EngineProcess` starts two child processes and three socketpairs:

```
locust process (gevent) --call/cancel--> call engine (asyncio: the calls on the wire)
        ^                                      | job: a finished call, spooled
        '------------ record ----------- analysis process (figures, files as bytes)
```

Under locust, gevent has patched `socket`, so this end is cooperative: a waiting greenlet yields
to the others, and one reader greenlet per child hands each record (or loss) to the greenlet that
asked for it. No audio and no call websocket ever touch gevent's loop (gevent #1216), and the
engine never touches a record: the analysis sends them here directly.
"""

from __future__ import annotations

import itertools
import shutil
import socket
import subprocess
import sys
import tempfile
from typing import Any

import gevent
from gevent.event import AsyncResult
from gevent.lock import Semaphore

from uvbench.locust import wire


class CallLost(Exception):
    """The engine could not give a record for a call (it raised, was cancelled, or the engine
    stopped); the message says why in one line."""


class EngineProcess:
    def __init__(self) -> None:
        mine, engine_end = socket.socketpair()
        jobs_out, jobs_in = socket.socketpair()  # engine -> analysis
        records_out, records_in = socket.socketpair()  # analysis -> here
        # Finished calls wait here for the analysis (the temporary folder: set TMPDIR to a disk
        # folder where /tmp is in memory).
        self.spool = tempfile.mkdtemp(prefix="uvbench-spool-")
        engine = [str(engine_end.fileno()), str(jobs_out.fileno()), self.spool]
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "uvbench.locust.engine", *engine],
            pass_fds=(engine_end.fileno(), jobs_out.fileno()),
        )
        self._analysis = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvbench.analysis.worker",
                str(jobs_in.fileno()),
                str(records_out.fileno()),
            ],
            pass_fds=(jobs_in.fileno(), records_out.fileno()),
        )
        for theirs in (engine_end, jobs_out, jobs_in, records_out):
            theirs.close()
        self._sock = mine
        self._records = records_in
        self._send_lock = Semaphore()  # frames from several greenlets must not interleave
        self._ids = itertools.count(1)
        self._waiting: dict[int, AsyncResult] = {}
        self.fatal: str | None = None
        self._reader = gevent.spawn(self._read, self._sock, "the call engine process exited")
        self._record_reader = gevent.spawn(self._read, self._records, "the analysis process exited")

    def _send(self, message: tuple[Any, ...]) -> None:
        with self._send_lock:
            wire.send(self._sock, message)

    def configure(self, spec: Any) -> None:
        """The test's scenarios, endpoints and run folder; calls asked before it is done wait
        in the engine."""
        self._send(("configure", spec))

    def call(self, scenario_index: int, tags: dict[str, Any]) -> tuple[dict[str, Any], dict[str, bytes]]:
        """Run one call in the engine and return its record and files (by suffix: the timeline,
        the recordings) once analysed (this greenlet waits, others run).

        If the greenlet is killed meanwhile (locust stopping its user), the call is cancelled."""
        if self.fatal:
            raise CallLost(self.fatal)
        call_id = next(self._ids)
        result = AsyncResult()
        self._waiting[call_id] = result
        try:
            self._send(("call", call_id, scenario_index, tags))
            return result.get()
        except gevent.GreenletExit:
            self._try_send(("cancel", call_id))
            raise
        finally:
            self._waiting.pop(call_id, None)

    def _try_send(self, message: tuple[Any, ...]) -> None:
        try:
            self._send(message)
        except OSError:
            pass

    def _read(self, sock: socket.socket, gone: str) -> None:
        try:
            while True:
                message = wire.receive(sock)
                kind = message[0]
                if kind == "record":
                    waiting = self._waiting.get(message[1])
                    if waiting is not None:
                        waiting.set((message[2], message[3] or {}))
                elif kind == "lost":
                    waiting = self._waiting.get(message[1])
                    if waiting is not None:
                        waiting.set_exception(CallLost(message[2]))
                elif kind == "fatal":
                    self._fail(message[1])
        except (OSError, EOFError):
            self._fail(self.fatal or gone)

    def _fail(self, line: str) -> None:
        self.fatal = line
        for waiting in list(self._waiting.values()):
            if not waiting.ready():
                waiting.set_exception(CallLost(line))

    def close(self, timeout_s: float = 10.0) -> None:
        """Ask the engine to cancel what runs and exit (it stops its analysis process then); kill
        them if they do not."""
        self._try_send(("stop",))
        for proc in (self._proc, self._analysis):
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._reader.kill(block=False)
        self._record_reader.kill(block=False)
        self._sock.close()
        self._records.close()
        shutil.rmtree(self.spool, ignore_errors=True)
