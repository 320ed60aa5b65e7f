"""What every command shares: exit codes, the one-line user error, the event loop choice."""

from __future__ import annotations

import os
import signal
import sys
import threading

from uvbench.eventloop import fast_event_loop_factory

__all__ = ["API_KEY_ENV", "UsageError", "fast_event_loop_factory"]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_NOT_RUN, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_TERMINATED = 143
"""128 + SIGTERM, as a shell reports a process SIGTERM ended."""
EXIT_BROKEN_PIPE = 141
"""128 + SIGPIPE: stdout's reader went away (`| head`), as a shell reports it."""
API_KEY_ENV = "UVBENCH_SERVER_API_KEY"


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


class HeldSignals:
    """Once the calls are over, SIGINT and SIGTERM are noted, not acted on, until the report and
    the closing line are out: the impatient second Ctrl-C (or the SIGTERM that follows one) would
    otherwise lose report.html and the verdict of a run whose calls are all measured. Writing the
    files takes seconds; SIGKILL still ends the process."""

    def __init__(self) -> None:
        self._previous: dict[int, object] = {}
        self._pid = 0
        self.noted: list[str] = []

    def hold(self) -> None:
        if self._previous or threading.current_thread() is not threading.main_thread():
            return
        self._pid = os.getpid()
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._note)

    def _note(self, signum: int, frame: object) -> None:
        if os.getpid() != self._pid:  # a process forked to draw the report's figures: the parent says it
            return
        if not self.noted:
            print("uvbench: the calls are over; writing the report first", file=sys.stderr, flush=True)
        self.noted.append(signal.Signals(signum).name)

    def release(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
