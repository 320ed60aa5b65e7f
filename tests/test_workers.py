"""`--workers N`: the load split across processes (pure), merged into one run folder, a crashed
worker kept apart, Ctrl-C leaving a valid partial folder."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.short_scenario import write_short_scenario
from uvbench.cli import main
from uvbench.runner.load import PACING_CALLS, LoadProfile, Stage, pacing_processes, split_count, whole_profile
from uvbench.runner.workers import FAULT_ENV, process_context, run_wide_numbers
from uvbench.server.process import ServerProcess

# -- the split (pure) --------------------------------------------------------------------------------


def shares(profile: LoadProfile, workers: int) -> list[LoadProfile | None]:
    return [profile.share(w, workers) for w in range(workers)]


def test_counts_split_as_evenly_as_possible_and_add_up():
    assert [split_count(5, w, 2) for w in range(2)] == [3, 2]
    assert [split_count(7, w, 3) for w in range(3)] == [3, 2, 2]
    assert [split_count(1, w, 2) for w in range(2)] == [1, 0]
    a, b = shares(LoadProfile(concurrency=5, iterations=9), 2)
    assert (a.concurrency, a.iterations, b.concurrency, b.iterations) == (3, 5, 2, 4)
    assert LoadProfile(concurrency=4).share(0, 1) == LoadProfile(concurrency=4)
    with pytest.raises(ValueError):
        LoadProfile().share(2, 2)


def test_a_worker_with_nothing_to_do_gets_none_and_is_not_started():
    one = LoadProfile(concurrency=1, duration_s=10)
    assert shares(one, 2)[1] is None and one.useful_workers(2) == 1
    assert shares(LoadProfile(concurrency=4, iterations=1), 2)[1] is None
    assert LoadProfile(concurrency=8, iterations=3).useful_workers(4) == 3
    assert shares(LoadProfile(arrival_rate=5, duration_s=2, max_in_flight=1), 2)[1] is None
    assert LoadProfile(arrival_rate=5, duration_s=2).useful_workers(4) == 4  # no cap: any number
    # A repeat-based run (no duration, no iterations) is made explicit before it is shared.
    assert whole_profile(LoadProfile(concurrency=3), calls=6) == LoadProfile(concurrency=3, iterations=6)


def test_each_stage_target_is_split():
    profile = LoadProfile(stages=(Stage(10, 5), Stage(10, 1), Stage(5, 0)), start_vus=3)
    a, b = shares(profile, 2)
    assert [s.target for s in a.stages] == [3, 1, 0] and [s.target for s in b.stages] == [2, 0, 0]
    assert (a.start_vus, b.start_vus) == (2, 1)
    for t in (0, 10, 20, 25):  # at every stage's end the parts add up to the whole
        assert a.target_at(t) + b.target_at(t) == profile.target_at(t)
    assert a.total_duration_s == b.total_duration_s == 25
    assert LoadProfile(stages=(Stage(5, 2),)).useful_workers(8) == 2


def test_open_model_arrivals_are_staggered_so_the_merged_ones_are_evenly_spaced():
    profile = LoadProfile(arrival_rate=4, duration_s=3, max_in_flight=5)
    parts = shares(profile, 3)
    assert [p.max_in_flight for p in parts] == [2, 2, 1]
    merged = []
    for part in parts:
        k = 0
        while not part.finished(part.arrival_s(k), k):
            merged.append(part.arrival_s(k))
            k += 1
    whole = [profile.arrival_s(k) for k in range(12)]
    assert sorted(merged) == whole == [k / 4 for k in range(12)]
    assert [parts[1].arrival_s(k) for k in range(3)] == [0.25, 1.0, 1.75]
    # A ramping rate too: worker w's call k is the run's arrival k*W + w.
    ramp = LoadProfile(rate_stages=(Stage(4, 8),), start_rate=2)
    a, b = shares(ramp, 2)
    assert [a.arrival_s(k) for k in range(3)] == [ramp.arrival_s(k) for k in (0, 2, 4)]
    assert [b.arrival_s(k) for k in range(3)] == [ramp.arrival_s(k) for k in (1, 3, 5)]


def test_the_number_of_pacing_processes_follows_the_peak_and_the_cores():
    assert LoadProfile(concurrency=50).peak_calls == 50
    assert LoadProfile(concurrency=50, iterations=3).peak_calls == 3
    assert LoadProfile(stages=(Stage(10, 300), Stage(10, 1200), Stage(5, 0))).peak_calls == 1200
    assert LoadProfile(arrival_rate=5, duration_s=60, max_in_flight=900).peak_calls == 900
    assert LoadProfile(arrival_rate=5, duration_s=60).peak_calls is None  # only the calls' length would tell
    assert pacing_processes(PACING_CALLS, 16, local_server=False) == 1
    assert pacing_processes(PACING_CALLS + 1, 16, local_server=False) == 2
    assert pacing_processes(5000, 4, local_server=False) == 4  # no more than the cores
    assert pacing_processes(5000, 4, local_server=True) == 3  # one is the local server's
    assert pacing_processes(5000, 2, local_server=True) == 1
    assert pacing_processes(None, 16, local_server=False) == 1


def test_per_vu_iterations_follow_the_vus():
    a, b = shares(LoadProfile(concurrency=3, iterations=6, iterations_per_vu=2), 2)
    assert (a.concurrency, a.iterations, b.concurrency, b.iterations) == (2, 4, 1, 2)


# -- real runs ---------------------------------------------------------------------------------------


def write_scenario(tmp_path, target: str | None = None):
    return write_short_scenario(tmp_path, "short", target=target)


def read_records(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


def test_two_workers_merge_into_one_run_folder(tmp_path, monkeypatch):
    with ServerProcess() as server:  # its own server: its concurrency figures are this run's alone
        monkeypatch.setenv("UVBENCH_TEST_KEY", server.api_key)
        scenario = write_scenario(tmp_path, f"{{base_url: {server.api_url}, api_key_env: UVBENCH_TEST_KEY}}")
        out = tmp_path / "out"
        code = main(
            [
                "run",
                str(scenario),
                "--workers",
                "2",
                "--vus",
                "4",
                "--iterations",
                "8",
                "--out",
                str(out),
                "-q",
            ]
        )
        series = httpx.get(
            f"{server.api_url}/accounts/me/usage/concurrency", headers={"X-API-Key": server.api_key}
        ).json()["timeSeries"]
    assert code in (0, 1)
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    records = read_records(folder)
    assert len(records) == 8
    assert len({r["call_id"] for r in records}) == 8 and all(r["call_id"] for r in records)
    assert {r["tags"]["worker"] for r in records} == {0, 1}
    assert sorted(r["tags"]["iteration"] for r in records) == list(range(8))  # the run's order, no gaps
    assert sorted(r["attempt"] for r in records) == list(range(1, 9))  # split, not run twice
    assert len({r["tags"]["vu"] for r in records}) == 4
    assert 1 <= min(r["concurrency"] for r in records) and max(r["concurrency"] for r in records) <= 4
    stems = set()
    for r in records:
        for artifact in r["artifacts"].values():
            assert (folder / artifact).stat().st_size > 0
        stems.add(r["artifacts"]["timeline"])
        assert (
            json.loads((folder / r["artifacts"]["timeline"].replace(".timeline", "")).read_text())["call_id"]
            == (r["call_id"])
        )
    assert len(stems) == 8 and len(list((folder / "calls").glob("*.timeline.json"))) == 8
    summary = json.loads((folder / "summary.json").read_text())
    outcomes: dict[str, int] = {}
    for r in records:
        outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
    assert summary["calls"] == 8 and summary["outcomes"] == outcomes and summary["aggregate"]["calls"] == 8
    assert summary["workers"] == {"count": 2, "failed": []} and summary["interrupted"] is False
    rows = list(csv.DictReader(io.StringIO((folder / "calls.csv").read_text())))
    assert len(rows) == 8
    from junitparser import JUnitXml

    suites = {suite.name: suite for suite in JUnitXml.fromfile(str(folder / "junit.xml"))}
    assert suites["short"].tests == 8
    assert suites["short"].failures + suites["short"].errors == sum(1 for r in records if not r["passed"])
    # The server's own figures: both workers' calls were in flight together, never more than asked.
    assert max(bucket["maxJoinedCalls"] for bucket in series) == 4
    # The run folder rebuilds to exactly what it was, run-wide tags and all.
    before = (folder / "results.jsonl").read_bytes()
    assert main(["report", str(folder)]) == 0
    assert (folder / "results.jsonl").read_bytes() == before


def _take_numbers(numbers, scenarios: list[int], into) -> None:
    for scenario in scenarios:
        into.put((scenario, *run_wide_numbers(numbers, scenario)))


def test_run_wide_numbers_have_no_gaps_whoever_takes_them():
    ctx = process_context()
    numbers = ctx.Array("q", 1 + 2)
    into = ctx.Queue()
    # One process starts many more calls than the other (the split of a duration run is uneven).
    plans = [[0, 1] * 15, [1, 0, 0]]
    procs = [ctx.Process(target=_take_numbers, args=(numbers, plan, into)) for plan in plans]
    for proc in procs:
        proc.start()
    taken = [into.get(timeout=60) for _ in range(sum(map(len, plans)))]
    for proc in procs:
        proc.join(timeout=30)
    assert sorted(iteration for _, iteration, _ in taken) == list(range(33))
    for scenario, calls in ((0, 17), (1, 16)):
        assert sorted(a for s, _, a in taken if s == scenario) == list(range(1, calls + 1))


def test_call_numbers_have_no_gaps_when_one_worker_starts_more_calls(tmp_path):
    # 3 VUs over 2 workers: worker 0 carries 2 of them and starts about twice the calls of worker 1.
    # Each worker numbering every 2nd call of the run would leave gaps (0 1 2 3 4 6 8 ...).
    scenario = write_scenario(tmp_path)
    out = tmp_path / "out"
    code = main(
        ["run", str(scenario), "--workers", "2", "--vus", "3", "--duration", "6s", "--out", str(out), "-q"]
    )
    assert code in (0, 1)
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    records = read_records(folder)
    n = len(records)
    assert n >= 3 and {r["tags"]["worker"] for r in records} == {0, 1}
    assert sorted(r["tags"]["iteration"] for r in records) == list(range(n))
    assert sorted(r["attempt"] for r in records) == list(range(1, n + 1))
    stems = sorted(r["artifacts"]["timeline"].removeprefix("calls/")[:4] for r in records)
    assert stems == [f"{k:04d}" for k in range(1, n + 1)]


def test_a_crashed_worker_does_not_take_the_run_down(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(FAULT_ENV, "1:1")  # worker 1 dies right after sending its first record
    scenario = write_scenario(tmp_path)  # target local: the parent starts the one server
    out = tmp_path / "out"
    code = main(
        ["run", str(scenario), "--workers", "2", "--vus", "4", "--iterations", "4", "--out", str(out), "-q"]
    )
    captured = capsys.readouterr()
    assert code == 3  # the asked load was not delivered
    failures = [line for line in captured.err.splitlines() if "worker 1 of 2 stopped" in line]
    assert len(failures) == 1 and "(exit code 70) after 1 call" in failures[0], captured.err
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    records = read_records(folder)
    by_worker = {w: sum(1 for r in records if r["tags"]["worker"] == w) for w in (0, 1)}
    assert by_worker == {0: 2, 1: 1}  # worker 1's other call was lost with it, or never started
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["calls"] == 3 and summary["aggregate"]["calls"] == 3
    [failed] = summary["workers"]["failed"]
    assert (failed["worker"], failed["exit_code"], failed["calls"]) == (1, 70, 1)
    assert "run could not be carried out" in captured.out
    # Nothing says green: junit.xml has the dead process as an error, report.html as the verdict,
    # and a rebuild of the folder keeps both.
    for rebuilt in (False, True):
        if rebuilt:
            assert main(["report", str(folder)]) == 0
        junit = (folder / "junit.xml").read_text()
        assert '<testsuite name="load generator"' in junit and 'type="generator_failed"' in junit
        assert "worker 1 of 2 stopped" in junit
        page = (folder / "report.html").read_text()
        assert '<div class="banner bad">✗ 1 pacing process failed: ' in page


def test_ctrl_c_stops_the_workers_and_keeps_what_finished(tmp_path):
    scenario = write_scenario(tmp_path)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "uvbench", "run", str(scenario), "--out", str(out), "-q"]
    proc = subprocess.Popen(
        [*command, "--workers", "2", "--vus", "4", "--duration", "60s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    try:
        deadline = time.monotonic() + 40
        results = None
        while time.monotonic() < deadline:
            found = list(out.glob("*/results.jsonl"))
            if found and len(found[0].read_text().splitlines()) >= 2:
                results = found[0]
                break
            time.sleep(0.2)
        assert results is not None, "no call finished in time"
        os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C: every process of the group
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "stopped" not in stderr  # no worker reported as failed
    records = read_records(results.parent)
    created = [r["call_id"] for r in records if r["call_id"] is not None]  # Ctrl-C may beat a create
    assert len(records) >= 2 and len(set(created)) == len(created) >= 2
    summary = json.loads((results.parent / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["calls"] == len(records)
    assert summary["workers"]["failed"] == [] and (results.parent / "junit.xml").exists()
    assert "run interrupted" in stdout
