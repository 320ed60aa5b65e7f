"""The uvbench command: one-line errors with exit code 2, a server that starts and stops cleanly."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from uvbench.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "uvbench", *args], capture_output=True, text=True, timeout=170
    )


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("agent: [unclosed\n", r"server\.yaml:\d+:\d+: not valid YAML"),
        ("agnt: {}\n", r"server\.yaml: unknown key 'agnt' \(known: .*agent.*\)"),
        ("agent:\n  latency: {kind: gamma}\n", r"server\.yaml\.agent\.latency\.kind: 'gamma' is not one of"),
        ("faults:\n  output_jitter_ms: lots\n", r"faults\.output_jitter_ms: expected a number, got 'lots'"),
        ("plan: gold\n", r"unknown plan 'gold' \(known: unlimited, free"),
    ],
)
def test_bad_server_config_is_one_line_and_exit_2(tmp_path, config, expected):
    path = tmp_path / "server.yaml"
    path.write_text(config)
    result = run_cli("serve", "--config", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("uvbench: error: ")
    assert re.search(expected, lines[0]), lines[0]
    assert "Traceback" not in result.stderr


def test_missing_config_file_and_bad_plan_flag(tmp_path, capsys):
    assert main(["serve", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "cannot read the server config" in capsys.readouterr().err
    assert main(["serve", "--plan", "gold"]) == 2
    assert "--plan: unknown plan 'gold'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["run", "QUICK", "--arrival-rate", "inf", "--duration", "10s"], "at most 1000 calls a second"),
        (["run", "QUICK", "--arrival-rate", "nan", "--duration", "10s"], "got nan"),
        (["run", "QUICK", "--arrival-rate", "1e8", "--duration", "10s", "--max-in-flight", "2"], "got 1e+08"),
        (["run", "QUICK", "--stage", "10s:-5"], "the target is a number of calls, 0 or more"),
        (["run", "QUICK", "--stage", ""], "--stage is empty"),
        (["run", "QUICK", "--stage", "10s:5,0s:3"], "'0s:3': the duration must be positive"),
        (["serve", "--port", "99999"], "--port 99999 is not a TCP port"),
        (["serve", "--keep-calls", "0"], "--keep-calls: expected a whole number of calls from 1 to 1,"),
        (["serve", "--latency-ms", "-5"], "latency.ms: expected a number of 0 or more, got -5"),
        (["serve", "--latency-ms", "1e9"], "above this server's limit of 60000 ms"),
        (["history", "--db", "FOLDER"], "is not a file: name the history database"),
        (["run", "QUICK", "--give-up-after=-5s"], "--give-up-after '-5s' is not a duration"),
        (["run", "QUICK", "--give-up-after", "soon"], "(expected e.g. 30s or 2m; 0 never gives up)"),
        (["run", "QUICK", "--progress-interval", "100ms"], "'100ms' is not a duration of at least 1s"),
    ],
)
def test_flags_out_of_range_are_one_line_and_exit_2(tmp_path, capsys, argv, expected):
    """Each names the flag and the limit; none starts anything (no run folder, no server)."""
    quick = str(Path(__file__).resolve().parents[1] / "scenarios" / "quickstart.yaml")
    argv = [quick if a == "QUICK" else str(tmp_path) if a == "FOLDER" else a for a in argv]
    if argv[0] == "run":
        argv += ["--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("uvbench: error: ") and expected in err[0], err
    assert not (tmp_path / "out").exists()


def test_port_in_use_is_a_clear_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("serve", "--port", str(port))
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "Traceback" not in result.stderr


def test_serve_prints_its_address_and_key_and_stops_on_sigterm():
    env = dict(os.environ, UVBENCH_SERVER_API_KEY="cliTest1.abcdefghijklmnopqrstuvwxyz123456")
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvbench", "serve", "--port", "0", "--plan", "free"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        url = re.search(r"http://\S+", proc.stdout.readline()).group(0)
        assert "cliTest1." in proc.stdout.readline()
        assert "free" in proc.stdout.readline()
        health = httpx.get(f"{url}/_uvbench/health").json()
        assert health["status"] == "ok"
        unauthorized = httpx.get(f"{url}/api/calls")
        assert unauthorized.status_code == 401
        listed = httpx.get(f"{url}/api/calls", headers={"X-API-Key": env["UVBENCH_SERVER_API_KEY"]})
        assert listed.status_code == 200 and listed.json()["results"] == []
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_selfcheck_writes_a_report(tmp_path, capsys):
    assert main(["selfcheck", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("selfcheck passed")
    (folder,) = tmp_path.iterdir()
    report = json.loads((folder / "selfcheck.json").read_text())
    assert report["summary"]["clearAfterBargeInMs"] is not None
    assert report["call"]["endReason"] == "hangup"
    assert report["groundTruth"]["clears"]
    assert (folder / "server_recording.wav").stat().st_size > 1000


@pytest.mark.timeout(200)  # a 26 s call, which a busy machine may take a while to start and measure
def test_run_quickstart_writes_a_run_folder(tmp_path):
    result = run_cli("run", "scenarios/quickstart.yaml", "--out", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "order-status  call " in result.stdout and "expect: 5/5 passed" in result.stdout
    lines = result.stdout.splitlines()
    assert "processes: 1 pacing (1 call at most, about 500 per process, " in lines[1]
    assert lines[1].endswith("and a local server), 1 analysis")
    assert lines[2] == "recordings: every call (stereo FLAC in calls/, and the server's own when it made one)"
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]  # and history.sqlite
    records = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    # (A busy machine may make the client late for every figure of the call: then it is set
    # apart as the load generator's, never blamed on the agent.)
    (outcome,) = [r["outcome"] for r in records]
    assert outcome in ("completed", "invalid:generator_overloaded")
    record = records[0]
    assert len(record["turns"]) == 2 and len(record["barge_ins"]) == 1
    assert all("turn.ttfa_ms" in t["set_apart"] or t["metrics"]["turn.ttfa_ms"] > 0 for t in record["turns"])
    for artifact in record["artifacts"].values():
        assert (folder / artifact).stat().st_size > 0
    assert record["artifacts"]["recording"].endswith(".flac")
    assert json.loads((folder / "summary.json").read_text())["outcomes"] == {outcome: 1}
    assert f"report: {folder / 'report.html'}" in result.stdout.splitlines()


def test_open_shows_the_report_in_a_graphical_browser_only(tmp_path, monkeypatch, capsys):
    import webbrowser

    from uvbench.cli.run import _show_report

    (tmp_path / "report.html").write_text("<html></html>")
    opened: list[str] = []
    monkeypatch.setattr(webbrowser, "open", lambda url: opened.append(url) or True)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    _show_report(tmp_path, open_it=True)  # no display: text browsers would take the terminal over
    assert opened == [] and "no graphical web browser here" in capsys.readouterr().out
    monkeypatch.setenv("DISPLAY", ":0")
    _show_report(tmp_path, open_it=True)
    assert opened == [(tmp_path / "report.html").resolve().as_uri()]
    capsys.readouterr()
    _show_report(tmp_path, open_it=False)
    assert len(opened) == 1 and capsys.readouterr().out == f"report: {tmp_path / 'report.html'}\n"


def test_run_reports_scenario_problems_one_per_line_with_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nscript:\n  - say: no_such_clip.wav\n  - wiat_for: agent_done\n")
    result = run_cli("run", str(bad), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith(f"{bad}:") for line in lines)
    assert "no_such_clip.wav" in lines[0] and "wiat_for" in lines[1]
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def test_run_against_ultravox_without_a_key_is_one_line(tmp_path):
    scenario = tmp_path / "real.yaml"
    scenario.write_text("name: real\ntarget: ultravox\nscript:\n  - hang_up\n")
    env = {k: v for k, v in os.environ.items() if k != "ULTRAVOX_API_KEY"}
    result = subprocess.run(
        [sys.executable, "-m", "uvbench", "run", str(scenario), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "uvbench: error: scenario real: the API key for ultravox is not set: "
        "export ULTRAVOX_API_KEY=<your key> (keys are read from the environment only)"
    )
    assert not (tmp_path / "out").exists()  # no empty run folder left behind


def test_out_naming_a_file_is_one_line(tmp_path, capsys):
    quick = str(Path(__file__).resolve().parents[1] / "scenarios" / "quickstart.yaml")
    taken = tmp_path / "taken"
    taken.write_text("a file")
    assert main(["run", quick, "--out", str(taken), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"uvbench: error: --out {taken} is a file: name a folder to put the run's folder in"]
    assert taken.read_text() == "a file"


def test_a_breached_threshold_exits_1_and_shows_in_junit_and_report_rebuilds(tmp_path):
    from junitparser import JUnitXml

    scenario = tmp_path / "short.yaml"
    scenario.write_text(
        "name: short\nclient: {record: false}\nscript:\n  - wait_for: agent_done\n  - say: yes_16k.wav\n"
        "  - wait_for: agent_done\n  - hang_up\n"
    )
    out = tmp_path / "out"
    result = run_cli(
        "run", str(scenario), "--out", str(out), "--vus", "2", "--iterations", "2", "-q",
        "--threshold", "turn.ttfa_ms: p(95) < 1", "--threshold", "call.success_pct: > 99",
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "✗ turn.ttfa_ms p(95) < 1 p(95)=" in result.stdout
    assert "✓ call.success_pct > 99 value=100%" in result.stdout
    (folder,) = [p for p in out.iterdir() if p.is_dir()]  # and history.sqlite
    suites = {suite.name: suite for suite in JUnitXml.fromfile(str(folder / "junit.xml"))}
    assert suites["short"].tests == 2 and suites["short"].failures == 0
    assert suites["thresholds"].tests == 2 and suites["thresholds"].failures == 1
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["aggregate"]["calls"] == 2 and [t["passed"] for t in summary["thresholds"]] == [
        False,
        True,
    ]
    # the runner's keys, then the load the run was given, then the aggregate and the gates
    assert list(summary)[-3:] == ["load", "aggregate", "thresholds"]
    assert summary["load"]["vus"] == 2 and summary["load"]["iterations"] == 2
    before = (folder / "results.jsonl").read_text()
    rebuilt = run_cli("report", str(folder))
    assert rebuilt.returncode == 0 and "report rebuilt from 2 call timelines" in rebuilt.stdout
    assert (folder / "results.jsonl").read_text() == before
    assert run_cli("report", str(tmp_path)).returncode == 2


def test_record_failed_keeps_the_recordings_of_failed_calls_only(tmp_path):
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    body = "client: {record: all, ping_interval: 0}\nscript:\n  - wait_for: agent_done\n  - hang_up\n"
    (scenarios / "fine.yaml").write_text("name: fine\n" + body)
    (scenarios / "broken.yaml").write_text(
        "name: broken\n"
        + body
        + "  - expect:\n      - transcript_contains: never said\n        role: agent\n"
    )
    out = tmp_path / "out"
    result = run_cli("run", str(scenarios), "--out", str(out), "--record", "failed")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "recordings: calls that do not complete (stereo FLAC in calls/" in result.stdout
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    records = {r["scenario"]: r for r in map(json.loads, (folder / "results.jsonl").read_text().splitlines())}
    # (A busy machine may set a call apart as invalid: it did not complete either, so it is kept.)
    assert records["broken"]["outcome"] in ("failed:expect", "invalid:generator_overloaded")
    assert records["fine"]["outcome"] in ("completed", "invalid:generator_overloaded")
    for record in records.values():
        kept = {"timeline", "recording"} if record["outcome"] != "completed" else {"timeline"}
        assert set(record["artifacts"]) == kept, record["outcome"]
    assert sorted(p.name for p in (folder / "calls").glob("*.flac")) == sorted(
        r["artifacts"]["recording"].removeprefix("calls/")
        for r in records.values()
        if "recording" in r["artifacts"]
    )
    assert not (folder / ".spool").exists()  # every hand-over was measured and cleaned up


@pytest.mark.timeout(180)
def test_ctrl_c_mid_run_leaves_a_valid_partial_run_folder(tmp_path):
    proc, results = _start_long_run(tmp_path, finished=3)
    stdout, stderr = _signal_and_wait(proc, signal.SIGINT)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    lines = results.read_text().splitlines()
    assert len(lines) >= 3 and all(json.loads(line)["outcome"] for line in lines)
    summary = json.loads((results.parent / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["calls"] == len(lines)
    assert summary["aggregate"]["calls"] == len(lines)  # the report of what finished is written too
    assert (results.parent / "junit.xml").exists() and (results.parent / "calls.csv").exists()
    assert "run interrupted" in stdout


@pytest.mark.timeout(180)
def test_ctrl_c_again_and_again_while_the_run_ends_keeps_the_report_and_the_verdict(tmp_path):
    """The impatient user: Ctrl-C, then Ctrl-C every 50 ms until the process ends. The second one
    stops the wait for the calls in flight; the ones after the calls are over wait for the report."""
    proc, results = _start_long_run(tmp_path, finished=2)
    proc.send_signal(signal.SIGINT)
    reader = threading.Thread(target=lambda: out.append(proc.communicate(timeout=120)), daemon=True)
    out: list[tuple[str, str]] = []
    reader.start()
    sent = 1
    while proc.poll() is None and sent < 600:
        time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
            sent += 1
    reader.join(timeout=30)
    [(stdout, stderr)] = out
    assert sent > 3  # the signals kept coming while the run ended
    # 130, or killed by SIGINT during the interpreter's teardown after the closing line (Python
    # restores the default handler then), which a shell reports as 130 too.
    assert proc.returncode in (130, -signal.SIGINT), stderr
    assert "Traceback" not in stderr
    folder = results.parent
    for name in ("summary.json", "junit.xml", "calls.csv", "report.html"):
        assert (folder / name).exists(), name
    assert json.loads((folder / "summary.json").read_text())["aggregate"]["calls"] >= 2
    assert "run interrupted: " in stdout and f"results in {folder}/" in stdout
    assert "uvbench: the calls are over; writing the report first" in stderr
    assert "stopped (exit code" not in stderr  # the workers the user stopped did not fail
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["workers"]["failed"] == []


@pytest.mark.timeout(180)
def test_a_run_logged_to_a_file_prints_progress_lines(tmp_path):
    """In CI, stdout is not a terminal: k6 and locust print a line every few seconds; so does this."""
    scenario = tmp_path / "tick.yaml"
    scenario.write_text("name: tick\nclient: {record: none}\nscript:\n  - silence: 1s\n  - hang_up\n")
    command = [sys.executable, "-m", "uvbench", "run", str(scenario), "--out", str(tmp_path / "out")]
    load = ["--vus", "2", "--duration", "4s", "--progress-interval", "1s"]
    logged = subprocess.run([*command, *load], capture_output=True, text=True, timeout=170)
    # The run ran to its end (a call a busy machine set apart or failed makes it 1, not a crash).
    assert logged.returncode in (0, 1), logged.stderr
    progress = [line for line in logged.stdout.splitlines() if line.startswith("running (")]
    assert len(progress) >= 2, (
        logged.stdout
    )  # four seconds of load, one line a second (a busy machine may skip some)
    pattern = (
        r"running \(\dm\d\ds\), \d+ calls in flight, \d+ done \(\d+ completed, \d+ failed, \d+ invalid\)"
        r"(; ttfa p50 .+ ms, p95 .+ ms)?; pacer p99 \(worst call\) \d+\.\d ms"
    )
    assert all(re.fullmatch(pattern, line) for line in progress), progress
    quiet = subprocess.run([*command, *load, "-q"], capture_output=True, text=True, timeout=170)
    assert quiet.returncode in (0, 1) and "running (" not in quiet.stdout


@pytest.mark.timeout(180)
def test_a_reader_that_goes_away_ends_the_output_not_the_run(tmp_path):
    """`uvbench run ... | head` mid-run: no traceback; the run's files are written; exit 141 as a shell
    says."""
    scenario = tmp_path / "tick.yaml"
    scenario.write_text("name: tick\nclient: {record: none}\nscript:\n  - silence: 1s\n  - hang_up\n")
    command = [sys.executable, "-m", "uvbench", "run", str(scenario), "--out", str(tmp_path / "out")]
    proc = subprocess.Popen(
        [*command, "--vus", "2", "--duration", "3s", "--progress-interval", "1s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # the calls are running once a progress line is out
        if line.startswith(b"running ("):
            break
    proc.stdout.close()  # as `head` does after its lines
    _, stderr = proc.communicate(timeout=170)
    assert proc.returncode == 141, stderr
    assert b"Traceback" not in stderr and b"Exception" not in stderr
    [folder] = [p for p in (tmp_path / "out").iterdir() if p.is_dir()]
    assert (folder / "summary.json").exists() and (folder / "report.html").exists()


def _descendants(pid: int) -> set[int]:
    """Every live process whose chain of parents leads to `pid` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()  # noqa: SIM115, PTH123
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]  # noqa: SIM115, PTH123
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def _signal_and_wait(proc: subprocess.Popen, sig: int, timeout: float = 60) -> tuple[str, str]:
    """Send `sig` and wait for the process to end (killed if it does not); its stdout, stderr."""
    try:
        proc.send_signal(sig)
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()


def _start_long_run(tmp_path: Path, finished: int = 2) -> tuple[subprocess.Popen, Path]:
    """`uvbench run` of 1 s calls on 2 VUs for a minute, once `finished` calls have records."""
    scenario = tmp_path / "long.yaml"
    scenario.write_text("name: long\nclient: {record: false}\nscript:\n  - silence: 1s\n  - hang_up\n")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "uvbench", "run", str(scenario), "--out", str(out), "-q"]
    proc = subprocess.Popen(
        [*command, "--vus", "2", "--duration", "60s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120  # a busy machine may take long to start the processes
    while time.monotonic() < deadline:
        found = list(out.glob("*/results.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= finished:
            return proc, found[0]
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("no call finished in time")


@pytest.mark.timeout(180)
def test_sigterm_ends_the_run_as_ctrl_c_does_and_leaves_no_process(tmp_path):
    """What `timeout`, CI cancellation and `docker stop` send: the finished calls are kept, the
    summary, csv, junit and report written, exit 143, and the embedded server ends too."""
    proc, results = _start_long_run(tmp_path)
    children = _descendants(proc.pid)
    stdout, stderr = _signal_and_wait(proc, signal.SIGTERM)
    assert children, "the run had no child processes (the embedded server, its workers)"
    assert proc.returncode == 143, stderr
    assert "Traceback" not in stderr
    folder = results.parent
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["stopped_by"] == "SIGTERM"
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert summary["calls"] == len(records) >= 2
    # The calls the signal caught midway have records too, with what they measured.
    stopped = [r for r in records if r["outcome"] == "interrupted"]
    assert len(stopped) == summary["interrupted_calls"] >= 1
    assert all(r["outcome_detail"] == "the run stopped while the call ran" for r in stopped)
    # (measured, or set apart when a busy machine held the loop up around it)
    assert all(
        r["metrics"].get("call.create_ms") is not None or "call.create_ms" in (r.get("set_apart") or {})
        for r in stopped
        if r.get("call_id")
    )
    for name in ("junit.xml", "calls.csv", "report.html"):
        assert (folder / name).exists(), name
    assert "run interrupted" in stdout
    deadline = time.monotonic() + 15
    while _alive(children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(children), "processes left behind after SIGTERM"


@pytest.mark.timeout(180)
def test_sigkill_of_the_runner_leaves_no_process_behind(tmp_path):
    proc, _ = _start_long_run(tmp_path)
    try:
        children = _descendants(proc.pid)
        assert children
        proc.kill()
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 15
    while _alive(children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(children), "the embedded server or a worker outlived the runner"
