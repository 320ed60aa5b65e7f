"""A run's folder under reports/: written call by call, so an interrupted run keeps what finished.

reports/<YYYYmmdd-HHMMSS>-<name>/
  results.jsonl               one record per call, appended as each call is measured
  calls/<nnnn>-<scenario>.json        the call's record (config, metrics, transcripts, outcome)
  calls/<nnnn>-<scenario>.timeline.json   its full timeline (metrics can be recomputed from it;
                              `uvbench.call.timeline`: its audio rows packed, or JSON lists in the
                              timelines of earlier runs: both are read)
  calls/<nnnn>-<scenario>.flac         stereo: left the user as sent, right the agent as heard
  calls/<nnnn>-<scenario>.server.wav   the server's recording, when it made one
  summary.json                its `run` object (start, command, host) from the run's start,
                              the rest added at the end of the run

The run's coordinator owns the folder: it numbers each call's stem, writes its record
(`write_record`) and alone appends results.jsonl; an analysis process on the same machine writes
the call's other files under that stem, and a locust master writes those its workers send.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import platform
import re
import shlex
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from json.encoder import INFINITY
from json.encoder import encode_basestring_ascii as _json_str
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    from uvbench.call.timeline import Timeline

COMMAND_ENV = "UVBENCH_COMMAND"
"""The command line to record when this process was not started by it (`uvbench locust` starts
locust with arguments of its own, and sets this to the command the user typed)."""


def write_text(path: Path, text: str) -> None:
    """Write via a temporary file and a rename, so an interrupted write leaves the old file whole."""
    tmp = path.with_name(path.name + ".tmp")
    data = text.encode("utf-8")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_lines(path: Path, lines: list[str]) -> None:
    """`write_text(path, "".join(line + "\\n" for line in lines))`, a few lines at a time: no copy of a
    whole results.jsonl (tens of MB in a big run) is made in memory."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as out:
        for k in range(0, len(lines), 64):
            out.write("\n".join(lines[k : k + 64]) + "\n")
    os.replace(tmp, path)


def read_bytes(path: Path | str) -> bytes:
    """A file's bytes with plain system calls (a third of `Path.read_bytes`'s time for a small file,
    which counts when a big run's report reads twenty thousand of them)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def read_results(path: Path, leave_out: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The records of a results.jsonl, in its order, without the `leave_out` keys; a line that is not
    a record (cut short by a crash, or not UTF-8) is skipped. The runner keeps no record in memory
    while calls run: this is how the end of the run gets them back."""
    records = []
    with open(path, "rb") as lines:
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and "outcome" in record:
                for key in leave_out:
                    record.pop(key, None)
                records.append(record)
    return records


def generator_failures(summary: dict[str, Any]) -> list[str]:
    """The lines of summary.json's failed pacing processes (`workers.failed`), for the reports."""
    failed = (summary.get("workers") or {}).get("failed") or []
    return [str(f.get("message") or f) if isinstance(f, dict) else str(f) for f in failed]


def load_timeline(path: Path) -> Timeline:
    """A call's saved timeline (`calls/<stem>.timeline.json`), of this version or an earlier one."""
    from uvbench.call.timeline import Timeline

    return Timeline.from_json(json.loads(read_bytes(path)))


# ------------------------------------------------------------------------------------------------
# The run's metadata: summary.json's `run` object


def iso_time(epoch_s: float) -> str:
    """A wall-clock instant as ISO 8601 in this machine's time zone, with its UTC offset, to the
    millisecond ("2026-08-20T10:00:00.250+02:00")."""
    return dt.datetime.fromtimestamp(epoch_s).astimezone().isoformat(timespec="milliseconds")


def parse_iso_time(text: Any) -> dt.datetime | None:
    """`iso_time`'s text (or any ISO 8601 instant) as an aware datetime; None when it is not one
    (a time without an offset is taken as this machine's local time)."""
    if not isinstance(text, str) or not text:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo is not None else value.astimezone()


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command that started this process, shell-quoted, as the user would type it again: the
    program's name without its folder (`uvbench` for `python -m uvbench` too) and its arguments;
    `UVBENCH_COMMAND` instead when set (and `argv` is not given)."""
    if argv is None:
        told = os.environ.get(COMMAND_ENV)
        if told:
            return told
        argv = sys.argv
    words = list(argv)
    if not words:
        return "uvbench"
    program = Path(words[0])
    name = program.name
    if name == "__main__.py" and program.parent.name:  # python -m <package>
        name = program.parent.name
    return shlex.join([name or "uvbench", *words[1:]])


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("uvbench")
    except metadata.PackageNotFoundError:  # run from a source tree without installing it
        from uvbench import __version__

        return __version__


@dataclass
class RunClock:
    """When a run started, how long it ran, and what ran it: summary.json's `run` object.

    `started_at` is the run's start: the instant its load began, from which each call's
    `tags.start_offset_s` counts (so a call started at `started_at + start_offset_s`), until the
    load begins the moment the clock was made. `duration_s` is the whole run on the monotonic
    clock: from that start to the moment its last call was over and measured (`end`); `ended_at`
    is `started_at + duration_s`, so the three always agree whatever the wall clock did meanwhile.
    Written from the run's start (a run killed mid-way keeps `started_at`, with `ended_at` and
    `duration_s` null) and completed at its end."""

    started_wall: float
    """`time.time()` at the start."""
    started_mono: float
    """`time.monotonic()` at the same instant."""
    command: str
    duration_s: float | None = None

    @classmethod
    def now(cls, command: str | None = None) -> RunClock:
        return cls(time.time(), time.monotonic(), command if command is not None else command_line())

    def start_at(self, mono: float) -> None:
        """The run's start moves to the monotonic instant `mono` (the load's start, once known)."""
        self.started_wall += mono - self.started_mono
        self.started_mono = mono

    def end(self, mono: float | None = None) -> None:
        """The run is over (at the monotonic instant `mono`, default now)."""
        self.duration_s = max(0.0, (time.monotonic() if mono is None else mono) - self.started_mono)

    def to_json(self) -> dict[str, Any]:
        # the end from the duration as written, so that started_at + duration_s is ended_at to the ms
        duration = None if self.duration_s is None else round(self.duration_s, 3)
        ended = None if duration is None else iso_time(self.started_wall + duration)
        return {
            "started_at": iso_time(self.started_wall),
            "ended_at": ended,
            "duration_s": duration,
            "uvbench_version": _version(),
            "command": self.command,
            "host": socket.gethostname(),
            "python": platform.python_version(),
        }


def run_start(run: Mapping[str, Any] | None) -> dt.datetime | None:
    """The start of a run from its summary's `run` object (None when it has none)."""
    return parse_iso_time(run.get("started_at")) if isinstance(run, Mapping) else None


# ------------------------------------------------------------------------------------------------
# A record's JSON, as `json.dumps` writes it, faster


class _Unusual(Exception):
    """A value `record_json` leaves to `json.dumps` (the whole record then goes there)."""


def _float_text(value: float) -> str:
    if value != value:
        return "NaN"
    if value == INFINITY:
        return "Infinity"
    if value == -INFINITY:
        return "-Infinity"
    return float.__repr__(value)


def _scalar_text(value: Any) -> str | None:
    """JSON text of a str, int, float, bool or None (as `json.dumps`); None for anything else."""
    kind = type(value)
    if kind is str:
        return _json_str(value)
    if kind is float:
        return _float_text(value)
    if kind is int:
        return int.__repr__(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    return None


def _indented(value: Any, out: list[str], newline: str) -> None:
    text = _scalar_text(value)
    if text is not None:
        out.append(text)
        return
    kind = type(value)
    if kind is dict:
        items = value.items()
        opening, closing = "{", "}"
    elif kind is list or kind is tuple:
        items = value
        opening, closing = "[", "]"
    else:
        raise _Unusual
    if not value:
        out.append(opening + closing)
        return
    inner = newline + "  "
    separator = opening + inner
    for item in items:
        out.append(separator)
        if kind is dict:
            key, item = item
            if type(key) is not str:
                raise _Unusual
            out.append(_json_str(key) + ": ")
        text = _scalar_text(item)
        if text is not None:
            out.append(text)
        else:
            _indented(item, out, inner)
        separator = "," + inner
    out.append(newline + closing)


def record_json(record: Any) -> str:
    """`json.dumps(record, indent=2)`, the same text, in about half the time (the standard library
    indents in pure Python): a call JSON as the run writes it. Dicts with keys other than strings,
    and values JSON has no word for, go to `json.dumps` itself."""
    out: list[str] = []
    try:
        _indented(record, out, "\n")
    except (_Unusual, RecursionError):
        return json.dumps(record, indent=2)
    return "".join(out)


_ITEM_BREAK = re.compile(",\n *")
_BREAK = re.compile("\n *")


def compact_json(text: str) -> str:
    """The `json.dumps(x)` text of the value whose `json.dumps(x, indent=2)` text is `text`: raw
    line breaks only ever stand between tokens (JSON escapes them inside strings). For a text indented
    otherwise it is still the same value's tokens, with other spacing."""
    return _BREAK.sub("", _ITEM_BREAK.sub(", ", text))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:80] or "call"


class RunFolder:
    def __init__(self, root: Path, name: str, *, now: dt.datetime | None = None) -> None:
        stamp = (now or dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
        base = root / f"{stamp}-{_slug(name)}"
        path, n = base, 1
        while path.exists():  # two runs in the same second keep separate folders
            n += 1
            path = base.with_name(f"{base.name}-{n}")
        self.path = path
        self.calls_dir = path / "calls"
        self.calls_dir.mkdir(parents=True)
        self._results: Any = (path / "results.jsonl").open("a", encoding="utf-8")
        self.count = 0
        self._numbers = itertools.count(1)

    def call_stem(self, scenario: str) -> str:
        self.count += 1
        return f"{next(self._numbers):04d}-{_slug(scenario)}"

    def append_result(self, record: dict[str, Any]) -> None:
        """One line of results.jsonl (the only writer of the file, so lines never interleave)."""
        self._results.write(json.dumps(record) + "\n")
        self._results.flush()

    def write_record(self, stem: str, record: dict[str, Any]) -> dict[str, Any]:
        """A measured call's record (its files already in calls/): calls/<stem>.json, and a line
        of results.jsonl when this folder owns it. Returns the record."""
        (self.calls_dir / f"{stem}.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
        if self._results is not None:
            self.append_result(record)
        return record

    def write_summary(self, summary: dict[str, Any]) -> None:
        """summary.json, whole or not at all (it is written at the run's start and again later)."""
        write_text(self.path / "summary.json", json.dumps(summary, indent=2))

    def close(self) -> None:
        if self._results is not None:
            self._results.close()
