"""A run's folder under reports/: written call by call, so an interrupted run keeps what finished.

reports/<YYYYmmdd-HHMMSS>-<name>/
  results.jsonl               one record per call, appended as each call is measured
  calls/<nnnn>-<scenario>.json        the call's record (config, metrics, transcripts, outcome)
  calls/<nnnn>-<scenario>.timeline.json   its full timeline (metrics can be recomputed from it;
                              `uvbench.call.timeline`: its audio rows packed, or JSON lists in the
                              timelines of earlier runs: both are read)
  calls/<nnnn>-<scenario>.flac         stereo: left the user as sent, right the agent as heard
  calls/<nnnn>-<scenario>.server.wav   the server's recording, when it made one
  summary.json                written at the end of the run

The run's coordinator owns the folder: it numbers each call's stem, writes its record
(`write_record`) and alone appends results.jsonl; an analysis process on the same machine writes
the call's other files under that stem, and a locust master writes those its workers send.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import re
from json.encoder import INFINITY
from json.encoder import encode_basestring_ascii as _json_str
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from uvbench.call.timeline import Timeline


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
        (self.path / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")

    def close(self) -> None:
        if self._results is not None:
            self._results.close()
