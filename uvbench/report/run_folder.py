"""A run's folder under reports/: written call by call, so an interrupted run keeps what finished.

reports/<YYYYmmdd-HHMMSS>-<name>/
  results.jsonl               one record per call, appended as each call ends
  calls/<nnnn>-<scenario>.json        the call's record (config, metrics, transcripts, outcome)
  calls/<nnnn>-<scenario>.timeline.json   its full timeline (metrics can be recomputed from it)
  calls/<nnnn>-<scenario>.wav          stereo: left the user as sent, right the agent as heard
  calls/<nnnn>-<scenario>.server.wav   the server's recording, when it made one
  summary.json                written at the end of the run

With `--workers N` each worker process writes its calls' files through `RunFolder.attach` (stems
numbered worker-distinctly) and only the parent appends results.jsonl (`append_result`).
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
        self._prefix = ""

    @classmethod
    def attach(cls, path: Path, *, first: int, step: int, prefix: str = "") -> RunFolder:
        """A worker process's handle on the parent's run folder: its call files are numbered
        first, first+step, first+2*step, ... (worker w of W: w+1, w+1+W, ...), or carry the
        worker's `prefix` (a locust worker: "w1-0001-..."), so no two workers' stems collide;
        `write_call` does not touch results.jsonl (the parent appends it)."""
        folder = cls.__new__(cls)
        folder.path = path
        folder.calls_dir = path / "calls"
        folder.calls_dir.mkdir(parents=True, exist_ok=True)  # a locust worker on another machine
        folder._prefix = prefix
        folder._results = None
        folder.count = 0
        folder._numbers = itertools.count(first, step)
        return folder

    def call_stem(self, scenario: str) -> str:
        self.count += 1
        return f"{self._prefix}{next(self._numbers):04d}-{_slug(scenario)}"

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

    def write_call(
        self,
        stem: str,
        record: dict[str, Any],
        timeline: dict[str, Any],
        recording: bytes | None,
        server_recording: bytes | None,
    ) -> dict[str, Any]:
        """Write one call's files and append its record to results.jsonl; returns the record."""
        artifacts: dict[str, str] = {}
        (self.calls_dir / f"{stem}.timeline.json").write_text(json.dumps(timeline), encoding="utf-8")
        artifacts["timeline"] = f"calls/{stem}.timeline.json"
        if recording:
            (self.calls_dir / f"{stem}.wav").write_bytes(recording)
            artifacts["recording"] = f"calls/{stem}.wav"
        if server_recording:
            (self.calls_dir / f"{stem}.server.wav").write_bytes(server_recording)
            artifacts["server_recording"] = f"calls/{stem}.server.wav"
        record = {**record, "artifacts": artifacts}
        (self.calls_dir / f"{stem}.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
        if self._results is not None:
            self.append_result(record)
        return record

    def write_summary(self, summary: dict[str, Any]) -> None:
        (self.path / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")

    def close(self) -> None:
        if self._results is not None:
            self._results.close()
