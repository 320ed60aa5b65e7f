"""The uvbench run folder of a locust run, kept by the process that owns the test (locust's master,
or locust without workers): records appended as they arrive, the report written at the end.

Locust decides when calls start; this only receives their records (from this process's users, or
from workers over locust's own messages) and, at the end, writes what `uvbench run` writes:
summary.json, calls.csv, stats.csv, junit.xml, history and report.html, with the thresholds judged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uvbench.cli.common import EXIT_FAILED, EXIT_NOT_RUN
from uvbench.report.finish import finish_run
from uvbench.report.rebuild import UNREPORTED
from uvbench.report.run_folder import RunClock, RunFolder, command_line, read_results
from uvbench.runner.fanout import RecordTally
from uvbench.runner.run import RunSummary


@dataclass
class Verdict:
    lines: list[str]
    exit_code: int | None
    """For locust's process_exit_code: 1 a threshold failed, 3 nothing could be measured, 0 the
    thresholds passed; None (no thresholds) leaves locust's own rule (any failure: 1)."""


@dataclass
class RunCollector:
    folder: RunFolder
    thresholds: list[Any] = field(default_factory=list)
    load: Any = None
    """summary.json's `load` (the expanded k6 load of the scenario file, when locust followed it)."""
    profile: Any = None
    """The LoadProfile the shape follows, to tag each record with its stage; None with -u/-r/-t."""
    started_wall: float = field(default_factory=time.time)
    """The run's start (`time.time()`), from which each call's `tags.start_offset_s` counts."""
    started_mono: float = field(default_factory=time.monotonic)
    """The same instant on the monotonic clock, from which the run's duration counts."""
    command: str = field(default_factory=command_line)
    """summary.json's `run.command`: the command line that started this process."""
    tally: RecordTally = field(default_factory=RecordTally)
    """The records' counts; the records themselves are on disk until the end (see runner/workers.py)."""
    interrupted_calls: int = 0
    lost_calls: list[str] = field(default_factory=list)
    finished: bool = False
    _in_flight: dict[str, dict[str, Any]] = field(default_factory=dict)
    _vus: dict[tuple[Any, Any], int] = field(default_factory=dict)
    _started: int = 0
    clock: RunClock = field(init=False)

    def __post_init__(self) -> None:
        self.clock = RunClock(self.started_wall, self.started_mono, self.command)
        # From the start, as `uvbench run`: a run killed mid-way still says when it began.
        self.folder.write_summary({"run": self.clock.to_json(), "driver": "locust"})

    @classmethod
    def create(cls, out: Path, name: str, **kwargs: Any) -> RunCollector:
        return cls(RunFolder(Path(out), name), **kwargs)

    @property
    def path(self) -> Path:
        return self.folder.path

    def call_started(self, key: str, worker: Any, vu: Any) -> None:
        """A call began (told by its user before it runs; from a worker, by a message that
        arrives before its record). Its run-wide tags are fixed now, as `uvbench run` fixes them:
        `concurrency` = calls in flight in the whole run, this one included; `vu` numbered across
        workers in order of first call; `iteration` = run-wide start order."""
        vu_id = self._vus.setdefault((worker, vu), len(self._vus))
        self._in_flight[key] = {
            "vu": vu_id,
            "iteration": self._started,
            "concurrency": len(self._in_flight) + 1,
        }
        self._started += 1

    def call_ended(self, key: str | None) -> dict[str, Any] | None:
        """The run-wide tags of a call that ended (recorded, lost or interrupted)."""
        return self._in_flight.pop(key, None) if key is not None else None

    def add(self, record: dict[str, Any], files: dict[str, bytes] | None = None) -> dict[str, Any]:
        """One measured call: its files written into the run folder (by suffix, as the analysis
        made them: ".timeline.json", ".flac", ".server.wav"), tagged run-wide, its record written
        and appended to results.jsonl at once."""
        if self.finished:
            return record
        tags = dict(record.get("tags") or {})
        run_wide = self.call_ended(tags.get("call_key"))
        if run_wide is not None:
            # The engine's own figures, kept: its calls in flight and the user's number in its process.
            tags["worker_concurrency"], tags["worker_vu"] = tags.get("concurrency"), tags.get("vu")
            tags.update(run_wide)
        started = tags.get("started_at")
        if isinstance(started, (int, float)):
            offset = max(0.0, started - self.started_wall)
            tags["start_offset_s"] = round(offset, 3)
            if self.profile is not None:
                tags["stage"] = self.profile.stage_at(offset)
        stem = self.folder.call_stem(str(record.get("scenario")))
        artifacts = {}
        for kind, suffix in (record.get("artifacts") or {}).items():
            data = (files or {}).get(suffix)
            if data is not None:
                (self.folder.calls_dir / f"{stem}{suffix}").write_bytes(data)
                artifacts[kind] = f"calls/{stem}{suffix}"
        record = {
            **record,
            "tags": tags,
            "concurrency": tags.get("concurrency", 1),
            "stage": tags.get("stage"),
            "artifacts": artifacts,
        }
        self.folder.write_record(stem, record)
        self.tally.add(record)
        return record

    def lost(self, reason: str, key: str | None = None) -> None:
        """A call that gave no record (the engine failed it, or locust stopped its user); counted,
        never silently dropped."""
        self.call_ended(key)
        if reason.startswith("cancelled"):
            self.interrupted_calls += 1
        else:
            self.lost_calls.append(reason)

    def finish(self) -> Verdict:
        """Write summary.json and the report files, and judge the run (the session calls it once)."""
        self.finished = True
        if self.clock.duration_s is None:  # a second finish judges the same run, not a longer one
            self.clock.end()
        summary = {
            "run": self.clock.to_json(),
            **self.tally.to_json(),
            "dropped_calls": 0,
            "interrupted_calls": self.interrupted_calls,
            "lost_calls": len(self.lost_calls),
            "interrupted": False,
            "driver": "locust",
        }
        if self.load is not None:
            summary["load"] = self.load
        self.folder.write_summary(summary)
        self.folder.close()
        records = read_results(self.path / "results.jsonl", leave_out=UNREPORTED)
        done = finish_run(self.path, records, self.thresholds)
        lines = list(done.lines)
        if self.lost_calls:
            lines.append(
                f"uvbench: {len(self.lost_calls)} calls gave no record; the first: {self.lost_calls[0]}"
            )
        code: int | None = None
        if RunSummary(self.path, records).exit_code == EXIT_NOT_RUN:  # nothing could be measured
            code = EXIT_NOT_RUN
        elif self.thresholds:
            code = 0 if done.thresholds_passed else EXIT_FAILED
        passed = sum(1 for r in records if r["passed"])
        if (self.path / "report.html").is_file():
            lines.append(f"report: {self.path / 'report.html'}")
        lines.append(f"uvbench: {passed}/{len(records)} calls completed; results in {self.path}/")
        return Verdict(lines, code)
