"""What every command shares: exit codes, the one-line user error, the event loop choice."""

from __future__ import annotations

from uvbench.eventloop import fast_event_loop_factory

__all__ = ["API_KEY_ENV", "UsageError", "fast_event_loop_factory"]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_NOT_RUN, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_TERMINATED = 143
"""128 + SIGTERM, as a shell reports a process SIGTERM ended."""
API_KEY_ENV = "UVBENCH_SERVER_API_KEY"


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""
