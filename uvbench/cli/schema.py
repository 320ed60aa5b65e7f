"""`uvbench schema`: the JSON Schema of scenario files (`--suite`: of suite files)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from uvbench.cli.common import EXIT_OK, UsageError


def add_parser(sub) -> None:
    schema = sub.add_parser("schema", help="print the JSON Schema of scenario files")
    schema.add_argument("-o", "--output", type=Path, default=None, help="write it to this file instead")
    schema.add_argument(
        "--suite", action="store_true", help="the schema of suite files (a scenarios: map) instead"
    )
    schema.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from uvbench.scenario import json_schema

    if getattr(args, "suite", False):
        from uvbench.scenario.suite import suite_json_schema

        text = json.dumps(suite_json_schema(), indent=2)
    else:
        text = json.dumps(json_schema(), indent=2)
    if args.output is None:
        print(text)
    else:
        try:
            args.output.write_text(text + "\n")
        except OSError as exc:
            raise UsageError(f"{args.output}: cannot write the schema ({exc.strerror})") from None
    return EXIT_OK
