"""Signals to a running `uvbench run`, with and without `--workers`: SIGINT (a terminal's Ctrl-C),
SIGTERM (`timeout`, CI cancellation, `docker stop`) and SIGKILL (the OOM killer) of the runner, and
SIGKILL of one pacing process.

Whatever the signal: no call that finished before it is lost, no process of the run is left
behind (the embedded `uvbench serve` included), and where the runner could still write, every call
the run started is in its records and its report files are there. Each run has two scenarios of
1 s calls: `local` on the embedded server, whose process must end with the run, and `counted` on a
server of the test's own, whose list of calls says independently which calls the run started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.test_cli import _alive, _descendants
from uvbench.server.process import ServerProcess

COUNTED_KEY_ENV = "UVBENCH_SIGNALS_TEST_KEY"
CALL_SCRIPT = "client: {record: none, ping_interval: 0}\nscript:\n  - silence: 1s\n  - hang_up\n"
FINISHED_BEFORE_SIGNAL = 2
STARTUP_WAIT_S = 120  # a busy machine may take long to start a run's processes
EXIT_WAIT_S = 60
LEFTOVER_WAIT_S = 15


@pytest.fixture(scope="module")
def counted_server():
    with ServerProcess() as server:
        yield server


@dataclass
class Run:
    proc: subprocess.Popen
    results: Path
    case: str


def start_run(tmp_path: Path, server: ServerProcess, case: str, *load: str) -> Run:
    """`uvbench run` of both scenarios in a session of its own, once some calls have records."""
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    (scenarios / "local.yaml").write_text("name: local\n" + CALL_SCRIPT)
    (scenarios / "counted.yaml").write_text(
        f"name: counted\ntarget: {{base_url: {server.api_url}, api_key_env: {COUNTED_KEY_ENV}}}\n"
        f"call: {{metadata: {{case: {case}}}}}\n" + CALL_SCRIPT
    )
    out = tmp_path / "out"
    command = [sys.executable, "-m", "uvbench", "run", str(scenarios), "--out", str(out), "-q"]
    proc = subprocess.Popen(
        [*command, "--vus", "2", *load],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, **{COUNTED_KEY_ENV: server.api_key}),
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    deadline = time.monotonic() + STARTUP_WAIT_S
    while time.monotonic() < deadline:
        found = list(out.glob("*/results.jsonl"))
        if found and len(finished_lines(found[0])) >= FINISHED_BEFORE_SIGNAL:
            return Run(proc, found[0], case)
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    stdout, stderr = proc.communicate()
    raise AssertionError(f"no {FINISHED_BEFORE_SIGNAL} calls finished in time:\n{stdout}\n{stderr}")


def finished_lines(results: Path) -> list[str]:
    """The complete lines of results.jsonl (a line being appended has no newline yet)."""
    text = results.read_text()
    return text.splitlines()[: text.count("\n")]


def wait_for_exit(proc: subprocess.Popen) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=EXIT_WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat from its third field (state) on; empty once the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def niceness(pid: int) -> int | None:
    fields = stat_fields(pid)
    return int(fields[16]) if fields else None


def children_of(pid: int) -> set[int]:
    return {child for child in _descendants(pid) if (stat_fields(child) or [0, 0])[1] == str(pid)}


def assert_nothing_left_behind(processes: set[int]) -> None:
    deadline = time.monotonic() + LEFTOVER_WAIT_S
    while _alive(processes) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = {pid: command_line(pid) for pid in _alive(processes)}
    assert not left, f"processes outlived the run: {left}"


def embedded_servers(processes: set[int]) -> set[int]:
    return {pid for pid in processes if "-m uvbench serve" in command_line(pid)}


def server_call_ids(server: ServerProcess, case: str) -> set[str]:
    answer = httpx.get(
        f"{server.api_url}/calls",
        params={"metadata.case": case, "pageSize": "1000"},
        headers={"X-API-Key": server.api_key},
        timeout=10,
    ).json()
    assert answer["total"] == len(answer["results"])
    return {call["callId"] for call in answer["results"]}


def assert_every_started_call_is_accounted_for(
    run: Run, records: list[dict], server: ServerProcess, lost_in_flight: int = 0
) -> None:
    """The counted server's calls of this run all have records, except those the summary counts
    as lost with a dead pacing process, or the few cancelled before their create was answered (an
    interrupted record without a call id)."""
    created = server_call_ids(server, run.case)
    counted = [r for r in records if r["scenario"] == "counted"]
    recorded = {r["call_id"] for r in counted if r["call_id"]}
    assert recorded <= created
    unanswered = sum(1 for r in counted if r["call_id"] is None and r["outcome"] == "interrupted")
    assert len(created - recorded) <= unanswered + lost_in_flight, (created - recorded, lost_in_flight)


def assert_kept_what_finished(before: list[str], results: Path) -> list[dict]:
    """Every line written before the signal is still there, unchanged and first; every line parses."""
    after = finished_lines(results)
    assert after[: len(before)] == before
    assert results.read_text().endswith("\n")  # no line cut midway
    return [json.loads(line) for line in after]


WORKERS = pytest.mark.parametrize("workers", [(), ("--workers", "2")], ids=["one-process", "two-workers"])


@pytest.mark.timeout(200)
@WORKERS
@pytest.mark.parametrize(
    ("sig", "to_group", "exit_code"),
    [(signal.SIGINT, True, 130), (signal.SIGTERM, False, 143)],
    ids=["sigint-to-group", "sigterm-to-runner"],
)
def test_a_stop_signal_keeps_every_call_and_writes_the_report(
    tmp_path, counted_server, workers, sig, to_group, exit_code
):
    """Ctrl-C reaches every process of the terminal's foreground group; `timeout` and CI signal the
    runner alone. Either way the run stops as asked and accounts for every call it started."""
    case = f"{sig.name}-{len(workers)}".lower()
    run = start_run(tmp_path, counted_server, case, "--duration", "60s", *workers)
    processes = _descendants(run.proc.pid)
    assert embedded_servers(processes), "the run has no embedded server"
    before = finished_lines(run.results)
    if to_group:
        os.killpg(run.proc.pid, sig)
    else:
        run.proc.send_signal(sig)
    stdout, stderr = wait_for_exit(run.proc)
    assert run.proc.returncode == exit_code, stderr
    assert "Traceback" not in stderr
    records = assert_kept_what_finished(before, run.results)
    folder = run.results.parent
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["stopped_by"] == sig.name
    assert summary["calls"] == len(records) and summary["aggregate"]["calls"] == len(records)
    stopped = [r for r in records if r["outcome"] == "interrupted"]
    assert summary["interrupted_calls"] == len(stopped)
    assert summary["lost_calls"] == 0 and summary["workers"]["failed"] == []
    assert len({r["call_id"] for r in records if r["call_id"]}) == sum(1 for r in records if r["call_id"])
    assert_every_started_call_is_accounted_for(run, records, counted_server)
    for name in ("junit.xml", "calls.csv", "stats.csv", "report.html"):
        assert (folder / name).stat().st_size > 0, name
    assert "run interrupted" in stdout
    assert_nothing_left_behind(processes)


@pytest.mark.timeout(200)
@WORKERS
def test_sigkill_of_the_runner_keeps_the_streamed_lines_and_leaves_no_process(
    tmp_path, counted_server, workers
):
    run = start_run(tmp_path, counted_server, f"sigkill-{len(workers)}", "--duration", "60s", *workers)
    processes = _descendants(run.proc.pid)
    assert embedded_servers(processes), "the run has no embedded server"
    before = finished_lines(run.results)
    run.proc.kill()
    wait_for_exit(run.proc)
    # The runner could write nothing more: what it streamed stays whole, one record a line.
    records = assert_kept_what_finished(before, run.results)
    assert all(r["outcome"] and r["scenario"] in ("local", "counted") for r in records)
    # summary.json holds what was known from the start (when, what command), never an end.
    summary = json.loads((run.results.parent / "summary.json").read_text())
    assert summary["run"]["started_at"] and summary["run"]["ended_at"] is None
    assert "aggregate" not in summary
    assert_nothing_left_behind(processes)


@pytest.mark.timeout(200)
def test_sigkill_of_one_pacing_process_is_named_and_never_green(tmp_path, counted_server):
    run = start_run(tmp_path, counted_server, "worker-sigkill", "--iterations", "10", "--workers", "2")
    processes = _descendants(run.proc.pid)
    (fork_server,) = [
        pid for pid in children_of(run.proc.pid) if "multiprocessing.forkserver" in command_line(pid)
    ]
    # The fork server starts the pacing processes and the analysis ones, which lower their own
    # priority (nice +5) so that live audio goes first.
    pacing = sorted(pid for pid in children_of(fork_server) if niceness(pid) == niceness(run.proc.pid))
    assert len(pacing) == 2, {pid: niceness(pid) for pid in children_of(fork_server)}
    before = finished_lines(run.results)
    os.kill(pacing[0], signal.SIGKILL)
    stdout, stderr = wait_for_exit(run.proc)
    assert run.proc.returncode == 3, stderr  # the asked load was not delivered
    assert "Traceback" not in stderr
    records = assert_kept_what_finished(before, run.results)
    folder = run.results.parent
    summary = json.loads((folder / "summary.json").read_text())
    [failed] = summary["workers"]["failed"]
    named = [line for line in stderr.splitlines() if f"worker {failed['worker']} of 2 stopped" in line]
    assert len(named) == 1 and "exit code -9" in named[0], stderr
    assert failed["exit_code"] == -9
    assert summary["calls"] == len(records) and summary["interrupted"] is False
    # The other pacing process carried its share to the end.
    survivor = 1 - failed["worker"]
    assert sum(1 for r in records if r["tags"]["worker"] == survivor) == 5
    assert sum(1 for r in records if r["tags"]["worker"] == failed["worker"]) == failed["calls"]
    assert_every_started_call_is_accounted_for(run, records, counted_server, failed["lost_in_flight"])
    junit = (folder / "junit.xml").read_text()
    assert '<testsuite name="load generator"' in junit and 'type="generator_failed"' in junit
    assert f"worker {failed['worker']} of 2 stopped" in junit
    page = (folder / "report.html").read_text()
    assert '<div class="banner bad">✗ 1 pacing process failed: ' in page
    assert '<div class="banner ok">' not in page
    assert_nothing_left_behind(processes)
