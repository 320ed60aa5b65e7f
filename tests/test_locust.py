"""uvbench under locust, end to end: real locust processes (master, workers, or alone) on loopback,
running a short real-call scenario against the embedded local server started by the master."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.outcomes import MEASURED
from tests.short_scenario import short_scenario, write_short_scenario
from uvbench.locust import locustfile_path

LOCUST = [sys.executable, "-m", "locust"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def _rows(path: Path) -> dict[tuple[str, str], dict[str, str]]:
    with path.open() as f:
        return {(row["Type"], row["Name"]): row for row in csv.DictReader(f)}


def _run_folder(out: Path) -> Path:
    folders = [p for p in out.iterdir() if p.is_dir()]
    assert len(folders) == 1, folders
    return folders[0]


def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


@pytest.mark.timeout(180)
def test_master_and_two_workers_run_calls_and_write_both_reports(tmp_path: Path) -> None:
    scenario = write_short_scenario(tmp_path, "short", record="all")
    out, port = tmp_path / "reports", _free_port()
    common = ["-f", locustfile_path()]
    master = subprocess.Popen(
        [*LOCUST, *common, "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
         "--expect-workers", "2", "--headless", "-u", "4", "-r", "4", "-t", "9s", "-s", "60s",
         "--uvbench-scenario", str(scenario), "--uvbench-out", str(out),
         "--csv", str(tmp_path / "locust"), "--html", str(tmp_path / "locust.html"), "--only-summary"],
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    # Each worker in a working folder of its own, as on another machine: nothing it makes may be
    # left there, everything must reach the master's run folder.
    homes = [tmp_path / f"machine{i}" for i in range(2)]
    workers = []
    for home in homes:
        home.mkdir()
        workers.append(
            subprocess.Popen(
                [*LOCUST, *common, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)],
                cwd=home,
                env={**_env(), "TMPDIR": str(home)},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    try:
        log, _ = master.communicate(timeout=150)
        for worker in workers:
            worker.communicate(timeout=30)
    finally:
        for proc in (master, *workers):
            if proc.poll() is None:
                proc.kill()
    assert master.returncode == 0, log[-3000:]
    assert "Traceback" not in log

    # The calls ran on both workers, and their records reached the master's run folder.
    folder = _run_folder(out)
    records = _records(folder)
    assert {r["tags"]["worker"] for r in records} == {0, 1}
    assert records and all(r["outcome"] in MEASURED for r in records)
    # Run-wide tags, as `uvbench run --workers` gives: four users are VUs 0-3 across the workers,
    # and the run's calls in flight reach 4 (each worker's own count stays as worker_concurrency).
    assert {r["tags"]["vu"] for r in records} == {0, 1, 2, 3}
    assert max(r["concurrency"] for r in records) == 4
    assert max(r["tags"]["worker_concurrency"] for r in records) == 2
    assert len({r["tags"]["iteration"] for r in records}) == len(records)
    # Every call's files came to the master's folder: its record, timeline and recording.
    stems = set()
    for record in records:
        assert set(record["artifacts"]) == {"timeline", "recording"}
        for artifact in record["artifacts"].values():
            assert (folder / artifact).stat().st_size > 1000
        stem = record["artifacts"]["timeline"].removesuffix(".timeline.json")
        stems.add(stem)
        assert json.loads((folder / f"{stem}.json").read_text()) == record  # run-wide tags included
    assert len(stems) == len(records)
    assert [p.name for home in homes for p in home.iterdir()] == []  # nothing left on the workers
    # The run folder rebuilds to exactly what it was: results.jsonl byte for byte.
    before = (folder / "results.jsonl").read_bytes()
    rebuilt = subprocess.run(
        [sys.executable, "-m", "uvbench", "report", str(folder)], capture_output=True, text=True, timeout=60
    )
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert (folder / "results.jsonl").read_bytes() == before
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["driver"] == "locust" and summary["calls"] == len(records)
    assert (folder / "report.html").stat().st_size > 10_000
    assert f"report: {folder / 'report.html'}" in log
    completed = sum(r["outcome"] == "completed" for r in records)  # the rest set apart as overloaded
    assert f"uvbench: {completed}/{len(records)} calls completed; results in {folder}/" in log

    # Locust's CSV holds uvbench's request names with plausible figures.
    rows = _rows(tmp_path / "locust_stats.csv")
    call = rows[("call", "short:call")]
    assert int(call["Request Count"]) == len(records)
    assert int(call["Failure Count"]) == len(records) - completed
    assert 1000 < float(call["Median Response Time"]) < 20000
    # The timed requests are those whose figure stands (a busy machine may set some apart): one
    # setup per call, one spoken turn per call.
    valid = [r for r in records if r["outcome"] == "completed"]
    setups = sum("call.create_ms" in r["metrics"] and "call.join_ms" not in r["set_apart"] for r in valid)
    turns = sum("turn.ttfa_ms" in t["metrics"] for r in valid for t in r["turns"])
    assert setups + turns > 0, "every figure set apart: nothing to check"
    if setups:
        setup = rows[("call", "short:setup")]
        assert int(setup["Request Count"]) == setups and 0 < float(setup["Average Response Time"]) < 2000
    if turns:
        ttfa = rows[("turn", "short:ttfa")]
        assert int(ttfa["Request Count"]) == turns
        assert 100 < float(ttfa["Median Response Time"]) < 3000  # the simulated agent: ~0.5-1 s
    assert ("call", "short:playback") in rows
    if any("call.first_audio_ms" in r["metrics"] for r in valid):
        assert ("call", "short:first_audio") in rows
    assert (tmp_path / "locust.html").stat().st_size > 10_000


@pytest.mark.timeout(120)
def test_uvbench_locust_follows_the_files_load_and_gates_on_its_thresholds(tmp_path: Path) -> None:
    scenario = tmp_path / "gated.yaml"
    scenario.write_text(
        short_scenario("gated")
        + "load: {executor: constant-vus, vus: 2, duration: 6s}\n"
        + 'thresholds: {"turn.ttfa_ms": ["p(95) < 5"]}\n'
    )
    out = tmp_path / "reports"
    done = subprocess.run(
        [sys.executable, "-m", "uvbench", "locust", str(scenario), "--headless", "--only-summary",
         "-s", "20s", "--uvbench-out", str(out), "--csv", str(tmp_path / "locust")],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=100,
    )  # fmt: skip
    log = done.stdout + done.stderr
    assert done.returncode == 1, log[-3000:]  # the threshold failed; no call did
    assert "locust follows the load of" in log and "Traceback" not in log
    assert "✗ turn.ttfa_ms p(95) < 5" in log
    folder = _run_folder(out)
    records = _records(folder)
    # Two VUs for 6 s with --stop-timeout: every started call finished and was recorded.
    assert len(records) >= 2 and all(r["outcome"] in MEASURED for r in records)
    assert {r["tags"]["vu"] for r in records} == {0, 1}
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["load"]["executor"] == "constant-vus" and summary["load"]["vus"] == 2
    assert summary["thresholds"][0]["passed"] is False and summary["interrupted_calls"] == 0
    assert "gated" in (folder / "junit.xml").read_text()
    assert _rows(tmp_path / "locust_stats.csv")[("turn", "gated:ttfa")]["Failure Count"] == "0"


def test_a_bad_scenario_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nscript:\n  - sey: hello_16k.wav\n")
    done = subprocess.run(
        [*LOCUST, "-f", locustfile_path(), "--uvbench-scenario", str(bad), "--headless", "-t", "2s"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert f"{bad}:3:5: script[0].sey: unknown step kind" in done.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "uvbench", "locust", str(tmp_path / "nope.yaml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert missing.returncode == 2 and missing.stderr.strip().count("\n") == 0
    assert "no such scenario file" in missing.stderr
