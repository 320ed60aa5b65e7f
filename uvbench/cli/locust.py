"""`uvbench locust PATH [locust options]`: locust with uvbench's ready locustfile and PATH as the scenario.

The same as `locust -f <uvbench/locust/locustfile.py> --uvbench-scenario PATH [locust options]`:
every locust option works (-u, -r, -t, --headless, --csv, --html, --master, --worker,
--processes, ...), and so do uvbench's (--uvbench-out, --uvbench-threshold). Locust replaces this
process, so its exit code is the command's.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from uvbench.cli.common import UsageError
from uvbench.report.run_folder import COMMAND_ENV, command_line


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "locust",
        help="run a scenario file as a locust load test (locust's own options follow the path)",
        description="Run a scenario file's calls as locust users, with locust's options: e.g. "
        "uvbench locust scenarios/quickstart.yaml --headless -u 10 -r 2 -t 1m --csv out. "
        "Without -u, the file's `load:` shapes the test. Reports go to --uvbench-out (reports/). "
        "With --csv PREFIX there are two stats tables in locust's columns: PREFIX_stats.csv is "
        "locust's own request stats, the run folder's stats.csv is uvbench's, from the call records.",
    )
    parser.add_argument("path", type=Path, help="a scenario or suite file")
    parser.add_argument("locust_args", nargs=argparse.REMAINDER, help="locust's options, as `locust --help`")
    parser.set_defaults(handler=main)


def command(path: Path, locust_args: list[str]) -> list[str]:
    from uvbench.locust import locustfile_path

    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        locustfile_path(),
        "--uvbench-scenario",
        str(path),
        *locust_args,
    ]


def main(args: argparse.Namespace) -> int:
    if not args.path.exists():
        raise UsageError(f"{args.path}: no such scenario file (give a scenario or suite .yaml)")
    if args.path.is_dir():
        raise UsageError(f"{args.path} is a folder: give one scenario or suite file to `uvbench locust`")
    if any(a in ("-f", "--locustfile") or a.startswith("--locustfile=") for a in args.locust_args):
        raise UsageError("uvbench locust brings its own locustfile: drop -f (or run `locust -f` yourself)")
    argv = command(args.path, args.locust_args)
    sys.stdout.flush()
    # locust replaces this process: the run's summary records what the user typed, not locust's argv
    os.environ[COMMAND_ENV] = command_line()
    os.execv(argv[0], argv)
    return 0  # not reached: locust replaces this process
