"""A fault matrix through `uvbench run`: every kind of fault the local server injects, at each phase of
a call (create, join, the agent's reply, a barge-in, the end of the server itself), in one run of
concurrent calls beside calls with no fault.

Each fault must end its own call with a record that names it, and nothing else: the run goes on to
its end and writes every report file, and the calls without a fault measure what a run without any
fault measures. Faults the server applies per call travel in the create body
(`experimentalSettings.uvbench.faults`); the REST faults are server-wide, so each has a server of
its own, and so does the server killed mid-call.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from junitparser import JUnitXml

from tests.outcomes import MEASURED
from uvbench import lifeline
from uvbench.server import LocalServer, ServerConfig
from uvbench.server.config import generate_api_key

AGENT_LATENCY_MS = 100
EXTRA_LATENCY_MS = 1500
REST_DELAY_MS = 2000
DROP_MIDWAY_MS = 2500
STALL_MS = 2000
LONG_GREETING = (
    "I will now read you a rather long message so that there is plenty of speech for the fault to "
    "land in the middle of, and it keeps going for quite a while longer still."
)  # about ten seconds of speech: a drop at 2.5 s always finds the agent talking
TURN = ["wait_for: agent_done", "say: hello_16k.wav", "wait_for: agent_done", "hang_up"]
CLEAN = ("clean_a", "clean_b", "clean_c")
DROPPED = ("drop_at_join", "drop_mid_reply", "drop_mid_barge_in", "server_killed")


@dataclass(frozen=True)
class Case:
    server: str
    faults: dict[str, Any] = field(default_factory=dict)
    greeting: str = "Hi."
    script: tuple[str, ...] = tuple(TURN)


CASES: dict[str, Case] = {
    **{name: Case("main") for name in CLEAN},
    "drop_at_join": Case("main", {"drop_socket_after_ms": 0}),
    "drop_mid_reply": Case(
        "main", {"drop_socket_after_ms": DROP_MIDWAY_MS}, LONG_GREETING, ("wait_for: agent_done", "hang_up")
    ),
    # The user talks over the agent from 200 ms into its speech for about 7 s: the drop lands in it.
    "drop_mid_barge_in": Case(
        "main",
        {"drop_socket_after_ms": DROP_MIDWAY_MS},
        LONG_GREETING,
        ("wait_for: agent_audible", "{barge_in: long_story_24k.wav, after: 200ms}", "wait_for: agent_done"),
    ),
    "output_stall": Case(
        "main",
        {"output_stalls": [{"after_ms": 300, "duration_ms": STALL_MS}]},
        "Hello there, thanks for calling.",
    ),
    "malformed_frames": Case("main", {"malformed_messages": True, "unknown_messages": True}),
    "extra_latency": Case("main", {"extra_latency_ms": EXTRA_LATENCY_MS}),
    "rate_limit_storm": Case("storm_429"),
    "unavailable": Case("storm_503"),
    "slow_rest": Case("slow_rest"),
    "server_killed": Case("doomed", script=("wait_for: agent_done", "silence: 20s", "hang_up")),
}

SERVER_CONFIGS: dict[str, dict[str, Any]] = {
    "main": {},
    "storm_429": {"faults": {"rest_429": 1000}},  # outlasts every retry of the create
    "storm_503": {"faults": {"rest_503": 1000}},
    "slow_rest": {"faults": {"rest_delay_ms": REST_DELAY_MS}},
    "doomed": {},
}


class Serve:
    """`uvbench serve` in a process of the test's own: started all at once (each one's start-up is a
    second of imports), and one of them killed outright mid-call."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.api_key = generate_api_key()
        self.api_url = ""
        self.killed_ns: int | None = None
        """CLOCK_MONOTONIC, the clock of the calls' timelines."""
        self._config = tempfile.NamedTemporaryFile("w", suffix=".json")  # closed in close()
        json.dump({"agent": {"latency": {"kind": "fixed", "ms": AGENT_LATENCY_MS}}, **config}, self._config)
        self._config.flush()  # JSON is YAML
        # The parent's pid in the environment: the server ends with this process whatever ends it.
        env = dict(os.environ, UVBENCH_SERVER_API_KEY=self.api_key, **lifeline.parent_env())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvbench", "serve", "--port", "0", "--config", self._config.name],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )

    def wait_listening(self) -> None:
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        match = re.search(r"listening on (http://\S+)", line)
        assert match, f"uvbench serve did not start: {line!r}"
        self.api_url = match.group(1) + "/api"

    def kill_once_a_call_joined(self, stop: threading.Event) -> None:
        """SIGKILL half a second after the first call joined: mid-call, the script still running."""
        while not stop.is_set():
            try:
                calls = httpx.get(
                    f"{self.api_url}/calls", headers={"X-API-Key": self.api_key}, timeout=5
                ).json()
            except httpx.HTTPError:
                calls = {"results": []}
            if any(call.get("joined") for call in calls["results"]):
                stop.wait(0.5)
                self.proc.send_signal(signal.SIGKILL)
                self.killed_ns = time.monotonic_ns()
                return
            stop.wait(0.1)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self._config.close()


def scenario_text(name: str, case: Case, server: Serve, key_env: str) -> str:
    settings = {"agent": {"greeting": case.greeting, "replies": ["Okay."]}}
    if case.faults:
        settings["faults"] = case.faults
    lines = [
        f"name: {name}",
        f"target: {{base_url: {server.api_url}, api_key_env: {key_env}}}",
        f"call: {{experimentalSettings: {json.dumps({'uvbench': settings})}}}",
        "client: {record: none, ping_interval: 0}",
        "script:",
        *(f"  - {step}" for step in case.script),
    ]
    return "\n".join(lines) + "\n"


@dataclass
class Run:
    exit_code: int
    stdout: str
    stderr: str
    folder: Path
    records: dict[str, dict[str, Any]]
    summary: dict[str, Any]

    def timeline(self, name: str, kind: str) -> list[dict[str, Any]]:
        """The data of the call's timeline events of one kind, in order."""
        data = json.loads((self.folder / self.records[name]["artifacts"]["timeline"]).read_text())
        return [event[2] | {"t_ns": event[0]} for event in data["events"] if event[1] == kind]


def run_folder_of(path: Path, env: dict[str, str], out: Path, vus: int) -> Run:
    command = [sys.executable, "-m", "uvbench", "run", str(path), "--vus", str(vus), "--out", str(out), "-q"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=150)
    folders = [p for p in out.iterdir() if p.is_dir()] if out.is_dir() else []
    assert len(folders) == 1, f"exit code {done.returncode}, no run folder:\n{done.stdout}\n{done.stderr}"
    (folder,) = folders
    lines = (folder / "results.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    by_name = {r["scenario"]: r for r in records}
    assert len(by_name) == len(records), "a scenario ran more than once"
    summary = json.loads((folder / "summary.json").read_text()) if (folder / "summary.json").exists() else {}
    return Run(done.returncode, done.stdout, done.stderr, folder, by_name, summary)


@dataclass
class Matrix:
    faults: Run
    fault_free: Run
    doomed: Serve


@pytest.fixture(scope="module")
def matrix(tmp_path_factory) -> Matrix:
    tmp = tmp_path_factory.mktemp("fault_matrix")
    with contextlib.ExitStack() as stack:
        servers = {name: Serve(config) for name, config in SERVER_CONFIGS.items()}
        for server in servers.values():
            stack.callback(server.close)
        for server in servers.values():
            server.wait_listening()
        doomed = servers["doomed"]
        env = dict(os.environ)
        key_envs = {}
        for name, server in servers.items():
            key_envs[name] = f"UVBENCH_FAULT_MATRIX_{name.upper()}_KEY"
            env[key_envs[name]] = server.api_key
        everything, clean_only = tmp / "matrix", tmp / "clean"
        everything.mkdir()
        clean_only.mkdir()
        for name, case in CASES.items():
            text = scenario_text(name, case, servers[case.server], key_envs[case.server])
            (everything / f"{name}.yaml").write_text(text)
            if name in CLEAN:
                (clean_only / f"{name}.yaml").write_text(text)

        fault_free = run_folder_of(clean_only, env, tmp / "fault_free_out", vus=len(CLEAN))
        stop_killer = threading.Event()
        killer = threading.Thread(target=doomed.kill_once_a_call_joined, args=(stop_killer,), daemon=True)
        killer.start()
        try:
            faults = run_folder_of(everything, env, tmp / "matrix_out", vus=len(CASES))  # all at once
        finally:
            stop_killer.set()
            killer.join()
        yield Matrix(faults, fault_free, doomed)


def figure(record: dict[str, Any], name: str) -> float | None:
    """A call figure, kept or set apart (a busy machine sets figures apart; the value is still
    what was measured, and these checks are far wider than any load generator's lateness)."""
    value = record["metrics"].get(name)
    if value is None and name in record.get("set_apart", {}):
        value = record["set_apart"][name]["value"]
    return value


def turn_ttfa(record: dict[str, Any]) -> float:
    (turn,) = record["turns"]
    value = turn["metrics"].get("turn.ttfa_ms")
    return value if value is not None else turn["set_apart"]["turn.ttfa_ms"]["value"]


def agent_said(record: dict[str, Any]) -> list[str]:
    return [t["text"] for t in record["transcripts"] if t["role"] == "agent"]


def failure_kinds(record: dict[str, Any]) -> list[str]:
    return [f["kind"] for f in record["failures"]]


def assert_failed_by_the_fault(record: dict[str, Any]) -> None:
    """A failure, or invalid only if the client's own stream drifted (decided before failures)."""
    outcome = record["outcome"]
    drifted = outcome == "invalid:generator_overloaded" and "pacer drift" in (record["outcome_detail"] or "")
    assert outcome.startswith("failed:") or drifted, (outcome, record["outcome_detail"])
    assert not record["passed"]


# -- the run as a whole ----------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_the_run_goes_on_to_its_end_and_writes_every_report_file(matrix):
    run = matrix.faults
    assert run.exit_code == 1, run.stderr  # calls failed; nothing stopped the run
    assert "Traceback" not in run.stderr
    assert set(run.records) == set(CASES)  # one record per call, each fault's call included
    summary = run.summary
    assert summary["calls"] == len(CASES) and summary["aggregate"]["calls"] == len(CASES)
    assert summary["interrupted"] is False and summary["lost_calls"] == 0
    assert summary["workers"]["failed"] == []
    outcomes: dict[str, int] = {}
    for record in run.records.values():
        outcomes[record["outcome"]] = outcomes.get(record["outcome"], 0) + 1
    assert summary["outcomes"] == outcomes
    for name in ("junit.xml", "calls.csv", "stats.csv", "report.html"):
        assert (run.folder / name).stat().st_size > 0, name
    # A test case per call: failed where its record failed, with the outcome that says why.
    suites = {suite.name: suite for suite in JUnitXml.fromfile(str(run.folder / "junit.xml"))}
    for name, record in run.records.items():
        (case,) = suites[name]
        assert bool(case.result) != record["passed"], name
        if not record["passed"]:  # a failure or error with the outcome, or skipped as invalid
            (result,) = case.result
            said = f"{result.message}\n{result.text or ''}"
            invalid = record["outcome"].startswith("invalid:")
            assert ("invalid:" if invalid else f"outcome: {record['outcome']}") in said, (name, said)


@pytest.mark.timeout(300)
def test_calls_without_a_fault_measure_what_a_fault_free_run_measures(matrix):
    baseline = matrix.fault_free
    assert baseline.exit_code in (0, 1), baseline.stderr  # 1 only if the machine overloaded a call
    typical = statistics.median(turn_ttfa(r) for r in baseline.records.values())
    assert AGENT_LATENCY_MS < typical < AGENT_LATENCY_MS + 1500
    for name in CLEAN:
        record, before = matrix.faults.records[name], baseline.records[name]
        assert record["outcome"] in MEASURED, record["outcome_detail"]
        assert record["failures"] == [] and record["end_reason"] == "hangup"
        assert agent_said(record) == agent_said(before) == ["Hi.", "Okay."]
        # Generous: the same server and script, measured while ten other calls met their faults.
        assert abs(turn_ttfa(record) - typical) < 400, (name, turn_ttfa(record), typical)


# -- each fault, in the order a call meets them ------------------------------------------------


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("name", "status"), [("rate_limit_storm", 429), ("unavailable", 503)])
def test_a_refusing_api_fails_the_create_after_retries_that_honour_retry_after(matrix, name, status):
    record = matrix.faults.records[name]
    assert record["outcome"] == "failed:create"
    assert str(status) in record["outcome_detail"] and record["call_id"] is None
    answers = matrix.faults.timeline(name, "call.create_answered")
    assert len(answers) >= 2 and all(a["status"] == status and a["retry_after_s"] == 1 for a in answers)
    sent = [e["t_ns"] for e in matrix.faults.timeline(name, "call.create_sent")]
    gaps_s = [(later - earlier) / 1e9 for earlier, later in itertools.pairwise(sent)]
    assert gaps_s and all(gap >= 0.95 for gap in gaps_s), gaps_s  # each Retry-After: 1 waited out


@pytest.mark.timeout(300)
def test_a_slow_api_makes_a_slow_create_and_nothing_else(matrix):
    record = matrix.faults.records["slow_rest"]
    assert record["outcome"] in MEASURED, record["outcome_detail"]
    assert figure(record, "call.create_ms") >= REST_DELAY_MS
    assert record["end_reason"] == "hangup"  # read back, however slowly
    # Its server's agent is the others' (a REST delay is no websocket delay): the same turn latency.
    typical = statistics.median(turn_ttfa(r) for r in matrix.fault_free.records.values())
    assert abs(turn_ttfa(record) - typical) < 400, (turn_ttfa(record), typical)


@pytest.mark.timeout(300)
def test_a_socket_dropped_at_join_fails_the_call_before_any_turn(matrix):
    record = matrix.faults.records["drop_at_join"]
    assert_failed_by_the_fault(record)
    assert "closed_by_server" in failure_kinds(record)
    assert record["end_reason"] == "connection_error"  # the server's own account of the call
    assert record["turns"] == []
    (closed,) = matrix.faults.timeline("drop_at_join", "ws.closed")
    assert closed["by"] == "server" and closed["code"] == 1006  # no close frame: the TCP was cut


@pytest.mark.timeout(300)
def test_a_socket_dropped_mid_reply_keeps_what_was_heard(matrix):
    record = matrix.faults.records["drop_mid_reply"]
    assert_failed_by_the_fault(record)
    assert "closed_by_server" in failure_kinds(record) and record["end_reason"] == "connection_error"
    assert record["failures"][0]["step_index"] == "script step 0 (wait_for)"  # the greeting never ended
    assert figure(record, "call.first_audio_ms") is not None
    (greeting,) = [t for t in record["transcripts"] if t["role"] == "agent"]
    assert not greeting["final"] and LONG_GREETING.startswith(greeting["text"])
    assert 0 < len(greeting["text"]) < len(LONG_GREETING)


@pytest.mark.timeout(300)
def test_a_socket_dropped_mid_barge_in_keeps_the_barge_in(matrix):
    record = matrix.faults.records["drop_mid_barge_in"]
    assert_failed_by_the_fault(record)
    assert "closed_by_server" in failure_kinds(record) and record["end_reason"] == "connection_error"
    assert record["failures"][0]["step_index"] == "script step 1 (barge_in)"
    assert len(record["barge_ins"]) == 1


@pytest.mark.timeout(300)
def test_an_output_stall_is_an_underflow_of_about_its_length(matrix):
    record = matrix.faults.records["output_stall"]
    assert record["outcome"] in MEASURED, record["outcome_detail"]
    assert record["metrics"]["call.underflow_count"] >= 1
    assert record["metrics"]["call.underflow_ms"] >= STALL_MS - 500
    assert record["end_reason"] == "hangup"


@pytest.mark.timeout(300)
def test_malformed_and_unknown_frames_are_counted_and_the_call_goes_on(matrix):
    record = matrix.faults.records["malformed_frames"]
    assert record["outcome"] in MEASURED, record["outcome_detail"]
    assert record["metrics"]["call.malformed_count"] == 1
    (invalid,) = matrix.faults.timeline("malformed_frames", "msg.in_invalid")
    assert invalid["text"] == "{this is not json"
    types = [e["message"]["type"] for e in matrix.faults.timeline("malformed_frames", "msg.in")]
    assert "uvbench_unknown_message" in types
    assert matrix.faults.summary["aggregate"]["rates"]["call.malformed_rate"]["numerator"] == 1


@pytest.mark.timeout(300)
def test_extra_agent_latency_shows_in_the_turn_latency_alone(matrix):
    record = matrix.faults.records["extra_latency"]
    assert record["outcome"] in MEASURED, record["outcome_detail"]
    typical = statistics.median(turn_ttfa(r) for r in matrix.fault_free.records.values())
    assert EXTRA_LATENCY_MS - 300 < turn_ttfa(record) - typical < EXTRA_LATENCY_MS + 1500


@pytest.mark.timeout(300)
def test_a_server_killed_mid_call_fails_that_call_only(matrix):
    killed_ns = matrix.doomed.killed_ns
    assert killed_ns is not None, "the call on the doomed server never joined"
    record = matrix.faults.records["server_killed"]
    assert_failed_by_the_fault(record)
    assert "closed_by_server" in failure_kinds(record)
    assert record["failures"][0]["step_index"] == "script step 1 (silence)"
    (closed,) = matrix.faults.timeline("server_killed", "ws.closed")
    assert closed["by"] == "server" and closed["code"] == 1006
    assert record["duration_ms"] is None or record["duration_ms"] < 15_000  # not its 20 s of silence
    # The call could not be read back: the API is gone with its server, and the timeline says so.
    assert record["end_reason"] is None
    (warning,) = [w for w in matrix.faults.timeline("server_killed", "warning") if w["where"] == "read_back"]
    assert "connection refused" in warning["message"]
    # Calls on the wire when it died went on to their end, untouched.
    spanning = [
        name
        for name in CLEAN
        if matrix.faults.timeline(name, "ws.open")[0]["t_ns"]
        < killed_ns
        < matrix.faults.timeline(name, "ws.closed")[0]["t_ns"]
    ]
    assert spanning and all(matrix.faults.records[name]["outcome"] in MEASURED for name in spanning)


# -- defects found by the matrix --------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_a_dropped_socket_is_named_as_such_in_the_outcome(matrix):
    """Not the tag a wait timeout gets: the server cut the socket, and the step it cut is named."""
    for name in DROPPED:
        record = matrix.faults.records[name]
        assert record["outcome"] == "failed:server_close", (name, record["outcome"])
        assert record["outcome_detail"].startswith("the server dropped the connection (1006, no close frame)")


async def test_rest_faults_in_a_create_body_are_applied_or_refused():
    medium = {"serverWebSocket": {"inputSampleRate": 16000}}
    async with (
        LocalServer(ServerConfig()) as server,
        httpx.AsyncClient(base_url=server.base_url, headers={"X-API-Key": server.api_key}, timeout=10) as api,
    ):
        for faults, honoured in (
            ({"rest_delay_ms": 1000}, lambda answer, took_s: took_s >= 1.0),
            ({"rest_429": 1}, lambda answer, took_s: answer.status_code == 429),
            ({"rest_503": 1}, lambda answer, took_s: answer.status_code == 503),
        ):
            started = time.monotonic()
            answer = await api.post(
                "/api/calls", json={"medium": medium, "experimentalSettings": {"uvbench": {"faults": faults}}}
            )
            took_s = time.monotonic() - started
            (key,) = faults
            refused = answer.status_code == 400 and key in answer.text
            assert refused or honoured(answer, took_s), (faults, answer.status_code, round(took_s, 3))
