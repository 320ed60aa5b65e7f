"""The locust side of the call engine: greenlets ask for calls and wait for their records.

`EngineProcess` starts `python -m uvbench.locust.engine` with one end of a socketpair. Under
locust, gevent has patched `socket`, so this end is cooperative: a waiting greenlet yields to the
others, and one reader greenlet hands each record to the greenlet that asked for it. No audio and
no call websocket ever touch gevent's loop (gevent #1216); the greenlets only carry messages.
"""

from __future__ import annotations

import itertools
import socket
import subprocess
import sys
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
        mine, theirs = socket.socketpair()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "uvbench.locust.engine", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
        )
        theirs.close()
        self._sock = mine
        self._send_lock = Semaphore()  # frames from several greenlets must not interleave
        self._ids = itertools.count(1)
        self._waiting: dict[int, AsyncResult] = {}
        self.fatal: str | None = None
        self._reader = gevent.spawn(self._read)

    def _send(self, message: tuple[Any, ...]) -> None:
        with self._send_lock:
            wire.send(self._sock, message)

    def configure(self, spec: Any) -> None:
        """The test's scenarios, endpoints and run folder; calls asked before it is done wait
        in the engine."""
        self._send(("configure", spec))

    def call(self, scenario_index: int, tags: dict[str, Any]) -> dict[str, Any]:
        """Run one call in the engine and return its record (this greenlet waits, others run).

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

    def _read(self) -> None:
        try:
            while True:
                message = wire.receive(self._sock)
                kind = message[0]
                if kind == "record":
                    waiting = self._waiting.get(message[1])
                    if waiting is not None:
                        waiting.set(message[2])
                elif kind == "lost":
                    waiting = self._waiting.get(message[1])
                    if waiting is not None:
                        waiting.set_exception(CallLost(message[2]))
                elif kind == "fatal":
                    self._fail(message[1])
        except (OSError, EOFError):
            self._fail(self.fatal or "the call engine process exited")

    def _fail(self, line: str) -> None:
        self.fatal = line
        for waiting in list(self._waiting.values()):
            if not waiting.ready():
                waiting.set_exception(CallLost(line))

    def close(self, timeout_s: float = 10.0) -> None:
        """Ask the engine to cancel what runs and exit; kill it if it does not."""
        self._try_send(("stop",))
        try:
            self._proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._reader.kill(block=False)
        self._sock.close()
