"""Run metadata: summary.json's `run` object from a real `uvbench run` (written at the start,
completed at the end), the same run's calls dated in calls.csv and timed in JUnit (read with
junitparser), and the locust collector's `run` object."""

from __future__ import annotations

import csv
import io
import json
import platform
import shlex
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from tests.short_scenario import write_short_scenario
from uvbench.report.csv_report import calls_csv
from uvbench.report.junit import junit_xml
from uvbench.report.run_folder import RunClock, command_line, iso_time, read_results

RUN_KEYS = ["started_at", "ended_at", "duration_s", "uvbench_version", "command", "host", "python"]


def _summary(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        return None


@pytest.fixture(scope="module")
def short_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`uvbench run` of two short calls against the local server, as a user types it; summary.json
    as it stood while the run went on (the first one seen), then the finished run folder."""
    tmp = tmp_path_factory.mktemp("metadata")
    scenario = write_short_scenario(tmp, "short")
    out = tmp / "reports"
    argv = ["run", str(scenario), "--out", str(out), "--repeat", "2", "-q"]
    before = time.time()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvbench", *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    early = None
    # Each call lasts seconds of real-time audio: the summary of a run still going is there to see.
    while proc.poll() is None and early is None:
        folders = [p for p in out.iterdir() if p.is_dir()] if out.is_dir() else []
        if folders and not (folders[0] / "junit.xml").exists():
            early = _summary(folders[0])
        time.sleep(0.02)
    log, _ = proc.communicate(timeout=170)
    after = time.time()
    assert proc.returncode == 0, log
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    return {"folder": folder, "argv": argv, "early": early, "before": before, "after": after}


def test_summary_json_has_the_runs_metadata_from_its_start_to_its_end(short_run: dict[str, Any]) -> None:
    early = short_run["early"]
    assert early is not None and list(early) == ["run"]  # written before any call ended
    assert early["run"]["started_at"] and early["run"]["ended_at"] is None
    assert early["run"]["duration_s"] is None

    summary = _summary(short_run["folder"])
    assert summary is not None and list(summary)[0] == "run"
    run = summary["run"]
    assert list(run) == RUN_KEYS
    started, ended = datetime.fromisoformat(run["started_at"]), datetime.fromisoformat(run["ended_at"])
    assert started.utcoffset() is not None and ended.utcoffset() is not None  # ISO 8601 with the offset
    assert short_run["before"] <= started.timestamp() <= ended.timestamp() <= short_run["after"]
    # The start moved to the load's start, after the folder (and its first summary) was made.
    assert started >= datetime.fromisoformat(early["run"]["started_at"])
    assert (ended - started).total_seconds() == pytest.approx(run["duration_s"], abs=0.002)
    assert run["duration_s"] > 4  # two calls one after the other, each seconds of audio
    assert run["command"] == shlex.join(["uvbench", *short_run["argv"]])
    assert run["uvbench_version"] == metadata.version("uvbench")
    assert run["host"] == socket.gethostname() and run["python"] == platform.python_version()


def test_the_runs_calls_are_dated_in_calls_csv_within_the_run(short_run: dict[str, Any]) -> None:
    folder = short_run["folder"]
    run = _summary(folder)["run"]  # type: ignore[index]
    records = read_results(folder / "results.jsonl")
    rows = list(csv.DictReader(io.StringIO(calls_csv(records, run=run))))
    started, ended = datetime.fromisoformat(run["started_at"]), datetime.fromisoformat(run["ended_at"])
    assert len(rows) == 2
    for row, record in zip(rows, records, strict=True):
        offset = record["tags"]["start_offset_s"]
        assert float(row["start_offset_s"]) == offset
        at = datetime.fromisoformat(row["started_at"])
        assert abs(at - (started + timedelta(seconds=offset))) < timedelta(milliseconds=1)
        # Each call ended within the run.
        assert started <= at and at + timedelta(milliseconds=record["duration_ms"]) <= ended
        assert row["tag.worker"] == "0" and row["tag.attempt"] == str(record["tags"]["attempt"])
        assert row["outcome"] == "completed" and row["outcome_detail"] == ""


def test_junit_of_the_run_has_its_time_and_its_start(short_run: dict[str, Any]) -> None:
    from junitparser import JUnitXml

    folder = short_run["folder"]
    run = _summary(folder)["run"]  # type: ignore[index]
    records = read_results(folder / "results.jsonl")
    xml = JUnitXml.fromstring(junit_xml(records, run=run).encode())
    assert xml.time == pytest.approx(run["duration_s"], abs=0.001)
    start = datetime.fromisoformat(run["started_at"]).replace(tzinfo=None, microsecond=0).isoformat()
    assert xml._elem.get("timestamp") == start
    (suite,) = list(xml)
    assert suite.name == "short" and suite.timestamp == start
    calls = sum(r["duration_ms"] for r in records) / 1000
    # Its calls ran one after the other: their span is at least their durations, within the run.
    assert calls - 0.002 <= suite.time <= run["duration_s"] + 0.001
    assert suite.tests == 2 and suite.failures == suite.errors == 0


def test_the_locust_collector_writes_the_run_object_at_its_start_and_end(tmp_path: Path) -> None:
    from uvbench.locust.collect import RunCollector

    wall = time.time()
    collector = RunCollector.create(tmp_path, "locust run", started_wall=wall, command="locust -f x.py")
    first = _summary(collector.path)
    assert first == {"run": {**RunClock(wall, 0.0, "locust -f x.py").to_json()}, "driver": "locust"}
    assert first["run"]["started_at"] == iso_time(wall) and first["run"]["ended_at"] is None
    collector.finish()
    run = _summary(collector.path)["run"]  # type: ignore[index]
    assert run["started_at"] == iso_time(wall) and run["command"] == "locust -f x.py"
    assert run["duration_s"] >= 0 and run["ended_at"] == iso_time(wall + run["duration_s"])


def test_command_line_is_the_program_and_its_arguments_quoted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UVBENCH_COMMAND", raising=False)
    assert (
        command_line(["/venv/bin/uvbench", "run", "a b.yaml", "--vus", "5"])
        == "uvbench run 'a b.yaml' --vus 5"
    )
    assert command_line(["/src/uvbench/__main__.py", "compare", "x"]) == "uvbench compare x"
    assert command_line(["/venv/bin/locust", "-f", "l.py"]) == "locust -f l.py"
    monkeypatch.setenv("UVBENCH_COMMAND", "uvbench locust s.yaml --headless")
    assert command_line() == "uvbench locust s.yaml --headless"
    clock = RunClock(1_000.0, 50.0, "uvbench run s.yaml")
    clock.start_at(52.5)  # the load began 2.5 s after the clock was made
    clock.end(62.5)
    doc = clock.to_json()
    assert doc["duration_s"] == 10.0
    assert doc["started_at"] == iso_time(1_002.5) and doc["ended_at"] == iso_time(1_012.5)
