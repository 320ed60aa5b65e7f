"""The `uvbench` command line: one module per command, each with `add_parser(sub)` and `main(args)`.

Exit codes: 0 ok, 1 a check failed, 2 bad input, 3 the run could not be carried out, 130 Ctrl-C,
143 SIGTERM (what `timeout`, CI cancellation and `docker stop` send: handled as Ctrl-C is).
A user's mistake is one line on stderr (what, where, how to fix), never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from uvbench import __version__
from uvbench.cli import calls, compare, corpus, history, locust, report, run, schema, selfcheck, serve
from uvbench.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    UsageError,
    fast_event_loop_factory,
)

__all__ = ["main", "UsageError", "fast_event_loop_factory"]

COMMANDS = (serve, selfcheck, run, locust, report, compare, history, calls, schema, corpus)
"""In the order `uvbench --help` lists them."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="uvbench", description="Evaluate and load-test Ultravox voice agents."
    )
    parser.add_argument("--version", action="version", version=f"uvbench {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C's KeyboardInterrupt would be: everything that ends a run
    cleanly on Ctrl-C (its finished calls written, its report) does so on SIGTERM too."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.handler(args)
    except UsageError as exc:
        print(f"uvbench: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:  # `uvbench run ... | head`: the reader is gone, the run's files are written
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's last flush does not fail again
        return EXIT_BROKEN_PIPE
    except Terminated:
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
