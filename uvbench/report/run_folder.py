"""A run's folder under reports/: written call by call, so an interrupted run keeps what finished.

reports/<YYYYmmdd-HHMMSS>-<name>/
  results.jsonl               one record per call, appended as each call is measured
  calls/<nnnn>-<scenario>.json        the call's record (config, metrics, transcripts, outcome)
  calls/<nnnn>-<scenario>.timeline.json   its full timeline (metrics can be recomputed from it)
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
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from uvbench.call.timeline import Timeline


def write_text(path: Path, text: str) -> None:
    """Write via a temporary file and a rename, so an interrupted write leaves the old file whole."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def load_timeline(path: Path) -> Timeline:
    """A call's saved timeline (`calls/<stem>.timeline.json`)."""
    from uvbench.call.timeline import Timeline

    return Timeline.from_json(json.loads(path.read_text(encoding="utf-8")))


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
