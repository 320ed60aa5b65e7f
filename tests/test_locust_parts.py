"""The pure parts of the locust integration: request events of a record, the load as a locust shape,
the run folder a locust run keeps, and the engine's wire format. No locust, no network."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_report_files import _record
from uvbench.locust import wire
from uvbench.locust.collect import RunCollector
from uvbench.locust.requests import REQUEST_TYPES, Request, UvbenchFailure, requests_of, stats_tables_lines
from uvbench.locust.stages import NotAShape, ShapePlan
from uvbench.metrics.thresholds import parse_thresholds
from uvbench.runner.load import LoadProfile, Stage

ROOT = Path(__file__).resolve().parent.parent

T_SE = 5_000_000_000


def _rows(events: list[Request]) -> list[tuple[str, str, float, str | None]]:
    """(request_type, name, response_time, failure kind) of each event, in order."""
    rows = []
    for e in events:
        assert e.request_type in REQUEST_TYPES
        rows.append((e.request_type, e.name, e.response_time, e.exception.kind if e.exception else None))
    return rows


def _call(outcome: str = "completed", **extra: Any) -> dict[str, Any]:
    """A record shaped as `runner.run.call_record` writes it (the fields `requests_of` reads)."""
    record: dict[str, Any] = {
        "scenario": "booking",
        "variant": {},
        "attempt": 1,
        "tags": {"vu": 4, "worker": 2, "stage": 1, "attempt": 1, "started_at": 1000.0},
        "concurrency": 3,
        "stage": 1,
        "target": "local",
        "call_id": "11111111-2222-3333-4444-555555555555",
        "passed": outcome == "completed",
        "outcome": outcome,
        "outcome_detail": None if outcome == "completed" else f"detail of {outcome}",
        "error": None,
        "duration_ms": 8000.0,
        "end_reason": "hangup",
        "metrics": {
            "call.create_ms": 40.0,
            "call.join_ms": 10.0,
            "call.first_audio_ms": 700.0,
            "call.duration_ms": 8000.0,
            "call.underflow_count": 0,
            "call.underflow_ms": 0.0,
            "call.outcome": outcome,
        },
        "turns": [
            {
                "index": 0,
                "file": "hello.wav",
                "missed": False,
                "metrics": {"turn.ttfa_ms": 512.5},
                "t_se_ns": T_SE,
                "window_end_ns": T_SE + 3_000_000_000,
            },
            {
                "index": 1,
                "file": "book.wav",
                "missed": False,
                "metrics": {"turn.ttfa_ms": 640.0},
                "t_se_ns": T_SE + 4_000_000_000,
                "window_end_ns": None,
            },
        ],
        "barge_ins": [
            {
                "index": 0,
                "file": "stop.wav",
                "success": True,
                "missed": False,
                "metrics": {"interrupt.clear_ms": 90.0, "interrupt.silence_ms": 130.0},
            }
        ],
        "underflows": [],
        "expectations": [],
        "failures": [],
    }
    record.update(extra)
    return record


# -- requests_of ----------------------------------------------------------------------------------


def test_a_completed_call_gives_each_latency_and_no_failure() -> None:
    assert _rows(requests_of(_call())) == [
        ("call", "booking:setup", 50.0, None),
        ("call", "booking:first_audio", 700.0, None),
        ("turn", "booking:ttfa", 512.5, None),
        ("turn", "booking:ttfa", 640.0, None),
        ("barge_in", "booking:time_to_silence", 130.0, None),
        ("call", "booking:playback", 0.0, None),
        ("call", "booking:call", 8000.0, None),
    ]


def test_every_event_carries_the_calls_context() -> None:
    events = requests_of(_call())
    expected = {
        "call_id": "11111111-2222-3333-4444-555555555555",
        "scenario": "booking",
        "stage": 1,
        "vu": 4,
        "worker": 2,
        "outcome": "completed",
    }
    assert len(events) == 7
    assert all(e.context == expected for e in events)


def test_a_missed_turn_is_a_failure_timed_by_how_long_the_reply_was_waited_for() -> None:
    record = _call("failed:missed_turn", outcome_detail="no reply heard to turn(s) [0]")
    record["turns"][0] = {
        "index": 0,
        "file": "hello.wav",
        "missed": True,
        "metrics": {"turn.ttfa_ms": None},
        "t_se_ns": T_SE,
        "window_end_ns": T_SE + 2_750_000_000,
    }
    events = requests_of(record)
    ttfa = [e for e in events if e.name == "booking:ttfa"]
    assert [(e.response_time, e.exception and e.exception.kind) for e in ttfa] == [
        (2750.0, "missed_turn"),
        (640.0, None),
    ]
    assert repr(ttfa[0].exception) == "missed_turn: no reply to turn 0 (hello.wav)"
    call = events[-1]
    assert (call.name, call.exception and call.exception.kind) == ("booking:call", "failed:missed_turn")
    assert repr(call.exception) == "failed:missed_turn: no reply heard to turn(s) [0]"


def test_a_missed_last_turn_without_a_window_end_is_a_zero_time_failure() -> None:
    record = _call("failed:missed_turn")
    record["turns"][1].update(missed=True, metrics={"turn.ttfa_ms": None})
    ttfa = [e for e in requests_of(record) if e.name == "booking:ttfa"]
    assert [(e.response_time, e.exception and e.exception.kind) for e in ttfa] == [
        (512.5, None),
        (0.0, "missed_turn"),
    ]


def test_a_failed_interruption_is_a_failure_with_its_silence_time() -> None:
    record = _call()
    record["barge_ins"].append(
        {
            "index": 1,
            "file": "stop.wav",
            "success": False,
            "missed": False,
            "metrics": {"interrupt.clear_ms": None, "interrupt.silence_ms": 900.0},
        }
    )
    rows = [r for r in _rows(requests_of(record)) if r[0] == "barge_in"]
    assert rows == [
        ("barge_in", "booking:time_to_silence", 130.0, None),
        ("barge_in", "booking:time_to_silence", 900.0, "interrupt_failed"),
    ]
    failure = [e for e in requests_of(record) if e.exception is not None][0]
    assert repr(failure.exception) == (
        "interrupt_failed: the agent was heard to the end of its utterance after barge-in 1"
    )


def test_a_barge_in_not_judged_gives_its_silence_time_as_a_success() -> None:
    record = _call()
    record["barge_ins"][0].update(success=None, metrics={"interrupt.silence_ms": 75.0})
    assert [r for r in _rows(requests_of(record)) if r[0] == "barge_in"] == [
        ("barge_in", "booking:time_to_silence", 75.0, None)
    ]


def test_underflows_make_playback_a_failure_timed_by_the_underflow() -> None:
    record = _call()
    record["metrics"].update({"call.underflow_count": 3, "call.underflow_ms": 185.0})
    (playback,) = [e for e in requests_of(record) if e.name == "booking:playback"]
    assert playback.request_type == "call"
    assert playback.response_time == 185.0
    assert playback.exception is not None and playback.exception.kind == "underflow"
    assert repr(playback.exception) == "underflow: agent audio ran dry while the listener played it"
    assert requests_of(record)[-1].exception is None  # the call itself still completed


def test_an_invalid_call_gives_only_its_call_failure() -> None:
    detail = "all 3 anchored items set apart: anchor_late 2, loop_lag 1"
    record = _call("invalid:generator_overloaded", outcome_detail=detail)
    record["metrics"].update({"call.underflow_count": 2, "call.underflow_ms": 50.0})
    record["barge_ins"][0]["success"] = False
    events = requests_of(record)
    assert _rows(events) == [("call", "booking:call", 8000.0, "invalid:generator_overloaded")]
    assert repr(events[0].exception) == f"invalid:generator_overloaded: {detail}"
    assert events[0].context["outcome"] == "invalid:generator_overloaded"


def test_figures_set_apart_give_no_event_and_the_rest_of_the_call_counts() -> None:
    record = _call()
    first, _ = record["turns"]
    first["set_apart"] = {
        "turn.ttfa_ms": {"value": first["metrics"].pop("turn.ttfa_ms"), "reason": "anchor_late"}
    }
    barge_in = record["barge_ins"][0]
    barge_in["set_apart"] = {
        "interrupt.silence_ms": {
            "value": barge_in["metrics"].pop("interrupt.silence_ms"),
            "reason": "loop_lag",
        }
    }
    for name in ("call.join_ms", "call.first_audio_ms"):
        record.setdefault("set_apart", {})[name] = {
            "value": record["metrics"].pop(name),
            "reason": "loop_lag",
        }
    assert _rows(requests_of(record)) == [
        ("turn", "booking:ttfa", 640.0, None),  # the other turn
        ("call", "booking:playback", 0.0, None),  # playback is never set apart
        ("call", "booking:call", 8000.0, None),
    ]
    record["set_apart"]["call.create_ms"] = {
        "value": record["metrics"].pop("call.create_ms"),
        "reason": "loop_lag",
    }
    assert ("call", "booking:playback", 0.0, None) in _rows(requests_of(record))  # the call was created


def test_a_call_never_created_is_a_setup_failure_and_a_call_failure() -> None:
    # As `metrics.call` gives it: no `call.created`, so no create time, no socket, no figures.
    record = _call(
        "failed:create",
        outcome_detail="the call was never created (last status 503)",
        call_id=None,
        duration_ms=None,
        turns=[],
        barge_ins=[],
    )
    record["metrics"] = {
        "call.create_ms": None,
        "call.join_ms": None,
        "call.first_audio_ms": None,
        "call.duration_ms": None,
        "call.underflow_count": 0,
        "call.underflow_ms": 0.0,
    }
    events = requests_of(record)
    assert _rows(events) == [
        ("call", "booking:setup", 0.0, "failed:create"),
        ("call", "booking:call", 0.0, "failed:create"),
    ]
    assert repr(events[0].exception) == "failed:create: the call was never created (last status 503)"
    assert events[0].context["call_id"] is None


def test_the_error_stands_in_when_there_is_no_outcome_detail() -> None:
    record = _call("failed:create", outcome_detail=None, error="ConnectError: refused", turns=[])
    record["metrics"] = {"call.create_ms": 1200.0, "call.join_ms": None}
    setup = requests_of(record)[0]
    assert (setup.name, setup.response_time) == ("booking:setup", 1200.0)
    assert repr(setup.exception) == "failed:create: ConnectError: refused"


def test_a_socket_that_never_opened_is_a_setup_failure_timed_by_the_create() -> None:
    record = _call("failed:connect", outcome_detail="the websocket never opened", duration_ms=None)
    record.update(turns=[], barge_ins=[])
    record["metrics"].update({"call.join_ms": None, "call.first_audio_ms": None})
    events = requests_of(record)
    assert (events[0].name, events[0].response_time) == ("booking:setup", 40.0)
    assert repr(events[0].exception) == "failed:connect: the websocket never opened"
    assert (events[-1].name, events[-1].exception and events[-1].exception.kind) == (
        "booking:call",
        "failed:connect",
    )


def test_a_socket_that_never_opened_gives_no_playback_row() -> None:
    record = _call("failed:connect", outcome_detail="the websocket never opened", duration_ms=None)
    record.update(turns=[], barge_ins=[])
    record["metrics"].update({"call.join_ms": None, "call.first_audio_ms": None})
    assert [e.name for e in requests_of(record)] == ["booking:setup", "booking:call"]


def test_failure_repr_is_kind_and_reason() -> None:
    assert repr(UvbenchFailure("underflow", "ran dry")) == "underflow: ran dry"
    assert str(UvbenchFailure("failed:lost")) == "failed:lost"
    assert repr(UvbenchFailure("failed:lost", "")) == "failed:lost"


def test_a_record_without_scenario_or_outcome_is_named_and_failed() -> None:
    events = requests_of({"metrics": {}})
    assert _rows(events) == [("call", "call:call", 0.0, "failed:unknown")]


# -- ShapePlan ------------------------------------------------------------------------------------


def test_constant_users_for_the_duration() -> None:
    plan = ShapePlan.of(LoadProfile(concurrency=3, duration_s=10))
    assert plan.duration_s == 10
    assert plan.tick(0) == (3, 3.0)
    assert plan.tick(0.5) == (3, 3.0)
    assert plan.tick(5) == (3, 1.0)
    assert plan.tick(9.9) == (3, 1.0)
    assert plan.tick(10) is None
    assert plan.tick(42) is None


RAMP = LoadProfile(stages=(Stage(10, 10), Stage(10, 10), Stage(5, 0)))


def test_a_k6_ramp_follows_the_profile_each_second() -> None:
    plan = ShapePlan.of(RAMP)
    assert plan.duration_s == 25
    seen = []
    for k in range(50):
        t = k / 2
        tick = plan.tick(t)
        assert tick is not None, t
        users, rate = tick
        assert users == RAMP.target_at(t), t
        assert rate >= 1.0, t
        assert rate >= abs(RAMP.target_at(min(t + 1, 25)) - users), t
        if t < 1:
            assert rate >= users, t
        seen.append(users)
    assert seen[:4] == [0, 0, 1, 1]  # linear from 0, as k6 ramps
    assert seen[20] == 10 and seen[39] == 10  # held at 10 through the second stage
    assert (seen[40], seen[44], seen[49]) == (10, 6, 1)  # down 2 a second in the last 5 s
    assert plan.tick(20) == (10, 2.0)
    assert plan.tick(24.5) == (1, 1.0)
    assert plan.tick(25) is None


def test_a_steep_ramp_spawns_fast_enough() -> None:
    plan = ShapePlan.of(LoadProfile(stages=(Stage(2, 100), Stage(1, 100))))
    assert plan.tick(0) == (0, 50.0)
    assert plan.tick(0.5) == (25, 50.0)
    assert plan.tick(1.5) == (75, 25.0)


@pytest.mark.parametrize(
    "profile",
    [
        LoadProfile(arrival_rate=5, duration_s=30),
        LoadProfile(rate_stages=(Stage(10, 5),), max_in_flight=10),
    ],
    ids=["arrival_rate", "rate_stages"],
)
def test_an_open_model_is_not_a_shape(profile: LoadProfile) -> None:
    with pytest.raises(NotAShape, match="open model") as info:
        ShapePlan.of(profile)
    assert "-u/-r/-t" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_iterations_without_a_duration_are_not_a_shape() -> None:
    with pytest.raises(NotAShape, match="iterations") as info:
        ShapePlan.of(LoadProfile(concurrency=2, iterations=20))
    assert "-u/-r/-t" in str(info.value)


# -- RunCollector ---------------------------------------------------------------------------------

WALL = 1_700_000_000.0


@pytest.fixture
def no_html(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """finish_run without report.html (matplotlib costs about a second): a stand-in page writer."""
    calls: list[int] = []
    stub = types.ModuleType("uvbench.report.html")
    stub.write_html_report = lambda folder, records, *a, **k: calls.append(len(records))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "uvbench.report.html", stub)
    return calls


def _tagged(n: int, started_at: float, concurrency: int = 2, **extra: Any) -> dict[str, Any]:
    record = _record(n, "booking", **extra)
    record["tags"] = {"vu": n, "worker": 1, "started_at": started_at, "concurrency": concurrency}
    return record


def _summary_json(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "summary.json").read_text())


def _lines(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


def test_add_appends_at_once_and_tags_the_stage(tmp_path: Path) -> None:
    collector = RunCollector.create(tmp_path, "ramp test", profile=RAMP, started_wall=WALL)
    assert collector.path.parent == tmp_path and collector.path.name.endswith("-ramp_test")
    first = collector.add(_tagged(1, WALL + 12.3456))
    assert [r["call_id"] for r in _lines(collector.path)] == [first["call_id"]]
    collector.add(_tagged(2, WALL + 22.0))
    collector.add(_tagged(3, WALL - 5))  # a clock a little behind: offset 0, first stage
    lines = _lines(collector.path)
    assert [r["tags"]["start_offset_s"] for r in lines] == [12.346, 22.0, 0.0]
    assert [(r["stage"], r["tags"]["stage"]) for r in lines] == [(1, 1), (2, 2), (0, 0)]
    assert [r["concurrency"] for r in lines] == [2, 2, 2]  # no start was told: the record's own
    assert "worker_concurrency" not in lines[0]["tags"]
    # Only counts stay in memory; the records are read back from the file at the end.
    assert (collector.tally.calls, collector.tally.outcomes) == (3, {lines[0]["outcome"]: 3})


def test_add_without_a_profile_or_start_keeps_the_stage_unset(tmp_path: Path) -> None:
    collector = RunCollector.create(tmp_path, "plain", started_wall=WALL)
    record = _record(1, "booking")
    record["tags"] = {"vu": 1}
    added = collector.add(record)
    assert added["stage"] is None and added["concurrency"] == 1
    assert "start_offset_s" not in added["tags"]
    assert "tags" in record and record["tags"] == {"vu": 1}  # the caller's record is not changed


def test_run_wide_tags_come_from_the_starts_the_workers_told(tmp_path: Path) -> None:
    collector = RunCollector.create(tmp_path, "dist", started_wall=WALL)
    collector.call_started("0:0", worker=0, vu=0)
    collector.call_started("1:0", worker=1, vu=0)  # the same local VU number on another worker
    collector.call_started("0:1", worker=0, vu=1)
    first = _tagged(1, WALL + 1, concurrency=1)
    first["tags"].update(call_key="1:0", vu=0)
    first = collector.add(first)
    # Run-wide: the second call to start, with 2 in flight; VU 1 of the run; the worker's own kept.
    assert (first["concurrency"], first["tags"]["iteration"], first["tags"]["vu"]) == (2, 1, 1)
    assert (first["tags"]["worker_concurrency"], first["tags"]["worker_vu"]) == (1, 0)
    collector.lost("engine: boom", key="0:1")  # a lost call leaves the calls in flight too
    collector.call_started("1:1", worker=1, vu=0)  # worker 1's VU 0 again: still run-wide VU 1
    later = _tagged(2, WALL + 9, concurrency=1)
    later["tags"].update(call_key="1:1", vu=0)
    later = collector.add(later)
    assert (later["concurrency"], later["tags"]["iteration"], later["tags"]["vu"]) == (2, 3, 1)
    assert collector.call_ended("0:0") == {"vu": 0, "iteration": 0, "concurrency": 1}
    unknown = _tagged(3, WALL + 10, concurrency=4)  # its start was never told: the worker's tags stay
    unknown["tags"]["call_key"] = "9:9"
    assert collector.add(unknown)["concurrency"] == 4
    assert [r["concurrency"] for r in _lines(collector.path)] == [2, 2, 4]


def test_lost_calls_cancelled_are_interrupted_others_are_lost(tmp_path: Path, no_html: list[int]) -> None:
    collector = RunCollector.create(tmp_path, "lost", started_wall=WALL)
    collector.lost("cancelled: locust stopped the user while its call ran")
    collector.lost("ConnectError: connection refused")
    collector.lost("TimeoutError: no answer")
    assert (collector.interrupted_calls, collector.lost_calls) == (
        1,
        ["ConnectError: connection refused", "TimeoutError: no answer"],
    )
    verdict = collector.finish()
    assert verdict.exit_code == 3  # nothing measured
    assert "uvbench: 2 calls gave no record; the first: ConnectError: connection refused" in verdict.lines
    summary = _summary_json(collector.path)
    assert (summary["calls"], summary["interrupted_calls"], summary["lost_calls"]) == (0, 1, 2)
    assert summary["driver"] == "locust"


def test_finish_with_no_records_is_exit_3(tmp_path: Path, no_html: list[int]) -> None:
    collector = RunCollector.create(tmp_path, "empty", started_wall=WALL)
    verdict = collector.finish()
    assert verdict.exit_code == 3
    assert verdict.lines[-1] == f"uvbench: 0/0 calls completed; results in {collector.path}/"
    assert _summary_json(collector.path)["calls"] == 0
    assert collector.finished
    assert collector.add(_tagged(1, WALL)) and _lines(collector.path) == []  # after finish: not kept


@pytest.mark.parametrize(
    ("expression", "exit_code"),
    [("p(95) < 10", 1), ("p(95) < 1000", 0)],
    ids=["failed", "passed"],
)
def test_thresholds_decide_the_exit_code(
    tmp_path: Path, no_html: list[int], expression: str, exit_code: int
) -> None:
    thresholds = parse_thresholds({"turn.ttfa_ms": [expression]})
    collector = RunCollector.create(tmp_path, "gated", thresholds=thresholds, started_wall=WALL)
    collector.add(
        _tagged(1, WALL + 1, turns=[{"index": 0, "missed": False, "metrics": {"turn.ttfa_ms": 500.0}}])
    )
    verdict = collector.finish()
    assert verdict.exit_code == exit_code
    assert "THRESHOLDS" in verdict.lines
    (result,) = _summary_json(collector.path)["thresholds"]
    assert result["passed"] is (exit_code == 0)
    assert no_html == [1]


def test_without_thresholds_locust_keeps_its_own_exit_rule(tmp_path: Path, no_html: list[int]) -> None:
    collector = RunCollector.create(tmp_path, "ungated", started_wall=WALL)
    collector.add(_tagged(1, WALL + 1, outcome="failed:missed_turn"))
    collector.add(_tagged(2, WALL + 2))
    verdict = collector.finish()
    assert verdict.exit_code is None
    assert verdict.lines[-1] == f"uvbench: 1/2 calls completed; results in {collector.path}/"
    assert collector.finish() == verdict  # a second finish gives the same verdict


def test_finish_writes_the_summary_and_the_reports(tmp_path: Path) -> None:
    collector = RunCollector.create(
        tmp_path, "full", profile=RAMP, load={"executor": "ramping-vus"}, started_wall=WALL
    )
    collector.add(_tagged(1, WALL + 3))
    collector.add(_tagged(2, WALL + 15, outcome="failed:missed_turn"))
    collector.add(_tagged(3, WALL + 21, outcome="invalid:generator_overloaded"))
    collector.lost("cancelled: locust stopped the user while its call ran")
    collector.lost("RuntimeError: engine gone")
    verdict = collector.finish()
    folder = collector.path
    summary = _summary_json(folder)
    assert summary["driver"] == "locust"
    assert (summary["calls"], summary["passed"]) == (3, 1)
    assert summary["outcomes"] == {"completed": 1, "failed:missed_turn": 1, "invalid:generator_overloaded": 1}
    assert (summary["interrupted_calls"], summary["lost_calls"], summary["dropped_calls"]) == (1, 1, 0)
    assert summary["load"] == {"executor": "ramping-vus"}
    assert summary["thresholds"] == [] and "aggregate" in summary
    assert len((folder / "calls.csv").read_text().splitlines()) == 4  # header + 3 calls
    assert (folder / "junit.xml").read_text().count("<testcase") == 3
    assert (folder / "stats.csv").is_file()
    assert (folder / "report.html").stat().st_size > 10_000
    assert "turn.ttfa_ms" in (folder / "report.html").read_text()
    assert f"report: {folder / 'report.html'}" in verdict.lines
    assert "uvbench: 1 calls gave no record; the first: RuntimeError: engine gone" in verdict.lines
    assert verdict.exit_code is None
    assert [r["stage"] for r in _lines(folder)] == [0, 1, 2]


def test_the_two_stats_tables_say_which_is_which(tmp_path: Path) -> None:
    import csv
    import io

    from uvbench.report.csv_report import stats_csv

    folder = tmp_path / "20260101-000000-booking"
    assert stats_tables_lines(folder, None) == []  # without --csv, locust writes no table of its own
    head, locusts, uvbenchs = stats_tables_lines(folder, "out")
    assert "locust's columns" in head
    assert locusts.startswith("  out_stats.csv: locust's own request stats of the calls' request events")
    assert uvbenchs.startswith(f"  {folder / 'stats.csv'}: uvbench's, computed from the call records")
    # Each line names the rows its table has: locust's from the request events, uvbench's from stats_csv.
    record = _call(
        barge_ins=[
            {
                "index": 0,
                "success": True,
                "metrics": {"interrupt.clear_ms": 90.0, "interrupt.silence_ms": 95.0},
            }
        ]
    )
    fired = {e.name.split(":", 1)[1] for e in requests_of(record)}
    table = csv.DictReader(io.StringIO(stats_csv([record])))
    rows = {row["Name"].split(":", 1)[1] for row in table if row["Name"] != "Aggregated"}
    listed = lambda line: set(re.search(r"\(([a-z_, ]+);", line).group(1).split(", "))  # noqa: E731
    assert listed(locusts) == fired and listed(uvbenchs) == rows


# -- wire -----------------------------------------------------------------------------------------


def test_messages_round_trip_over_a_socketpair() -> None:
    a, b = socket.socketpair()
    big = ("record", 7, {"pcm": bytes(range(256)) * 8192, "text": "x" * 300_000})  # > 2 MiB pickled
    with a, b:
        sender = threading.Thread(target=lambda: [wire.send(a, m) for m in (("ready",), big, None)])
        sender.start()
        assert wire.receive(b) == ("ready",)
        got = wire.receive(b)
        assert got == big and len(got[2]["pcm"]) == 2 * 1024 * 1024
        assert wire.receive(b) is None
        sender.join(timeout=5)
        assert not sender.is_alive()


def test_closed_when_the_other_end_closes() -> None:
    a, b = socket.socketpair()
    with b:
        wire.send(a, ("call", 1, 0, {}))
        a.close()
        assert wire.receive(b) == ("call", 1, 0, {})  # what was sent before the close still arrives
        with pytest.raises(wire.Closed):
            wire.receive(b)


def test_closed_in_the_middle_of_a_message() -> None:
    a, b = socket.socketpair()
    with b:
        a.sendall(wire._HEADER.pack(1000) + b"\x80\x05")
        a.close()
        with pytest.raises(
            EOFError, match="closed"
        ):  # Closed is an EOFError: the engine's reader stops on it
            wire.receive(b)


# -- imports --------------------------------------------------------------------------------------

PROBE = (
    "import uvbench.locust.requests, uvbench.locust.stages, uvbench.locust.collect, "
    "uvbench.locust.engine, sys; "
    "assert 'gevent' not in sys.modules and 'locust' not in sys.modules, "
    "sorted(m for m in sys.modules if m.split('.')[0] in ('gevent', 'locust'))"
)


@pytest.fixture(scope="module", autouse=True)
def import_probe() -> Iterator[subprocess.Popen[str]]:
    """The import check in a fresh interpreter (this one has imported what the other tests need),
    started with the module's first test so its second of imports runs beside the other tests."""
    probe = subprocess.Popen(
        [sys.executable, "-c", PROBE], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    yield probe
    if probe.poll() is None:
        probe.kill()
    probe.communicate()


def test_the_pure_modules_do_not_import_locust_or_gevent(import_probe: subprocess.Popen[str]) -> None:
    _, stderr = import_probe.communicate(timeout=60)
    assert import_probe.returncode == 0, stderr
