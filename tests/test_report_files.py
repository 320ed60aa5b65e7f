"""Report files: junit.xml, calls.csv, stats.csv (Locust layout) and `rebuild` of a saved run folder."""

from __future__ import annotations

import csv
import io
import json
import shutil
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from uvbench.report.csv_report import (
    CALL_NUMERIC_METRICS,
    CALLS_COLUMNS,
    STATS_COLUMNS,
    calls_csv,
    response_time_percentile,
    stats_csv,
)
from uvbench.report.junit import junit_xml
from uvbench.report.rebuild import RebuildResult, rebuild
from uvbench.runner.run import run_scenarios
from uvbench.scenario.loader import load_scenarios

ROOT = Path(__file__).resolve().parent.parent


# -- a real run (the quickstart scenario against the embedded server), once for the module ---------


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # These tests are about the files, so they want a call whose every figure stands: on a busy
    # machine the client may have been late for some (set apart), and the call is run again.
    for _ in range(3):
        out = tmp_path_factory.mktemp("runs")
        summary = run_scenarios(load_scenarios(ROOT / "scenarios" / "quickstart.yaml"), out, "quickstart")
        (record,) = summary.records
        items = [record, *record["turns"], *record["barge_ins"]]
        if record["outcome"] == "completed" and not any(item.get("set_apart") for item in items):
            break
    assert record["outcome"] == "completed", record["outcome_detail"]
    return summary.folder


@pytest.fixture
def run_copy(real_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(real_run, tmp_path / real_run.name))


def _results(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


def _call_json(folder: Path) -> Path:
    (path,) = [p for p in (folder / "calls").glob("*.json") if not p.name.endswith(".timeline.json")]
    return path


# -- synthetic records ----------------------------------------------------------------------------


def _record(n: int, scenario: str, outcome: str = "completed", **extra: Any) -> dict[str, Any]:
    base = 1_000_000_000_000 + n * 10_000_000_000
    record = {
        "scenario": scenario,
        "variant": {},
        "call_id": f"{n:08d}-aaaa-bbbb-cccc-dddddddddddd",
        "passed": outcome == "completed",
        "outcome": outcome,
        "outcome_detail": None if outcome == "completed" else f"detail of {outcome}",
        "error": None,
        "duration_ms": 2500.0,
        "end_reason": "hangup",
        "metrics": {"call.create_ms": 40.0, "call.join_ms": 10.0, "call.duration_ms": 2500.0},
        "turns": [{"index": 0, "missed": False, "metrics": {"turn.ttfa_ms": 500.0 + n}}],
        "barge_ins": [],
        "underflows": [],
        "anchors": {"ws_open_ns": base, "ws_closed_ns": base + 2_500_000_000},
        "expectations": [],
        "failures": [],
        "transcripts": [{"role": "agent", "text": f"hello {n}"}],
        "artifacts": {
            "timeline": f"calls/{n:04d}-{scenario}.timeline.json",
            "recording": f"calls/{n:04d}-{scenario}.wav",
        },
    }
    record.update(extra)
    return record


def _synthetic() -> list[dict[str, Any]]:
    return [
        _record(1, "booking"),
        _record(
            2,
            "booking",
            "failed:expect",
            expectations=[
                {"step": 3, "ok": True, "what": "agent transcript contains 'hi'", "detail": "heard: hi"},
                {"step": 4, "ok": False, "what": "turn.ttfa_ms < 1500 (turn 0)", "detail": "got 1840.2"},
            ],
            failures=[
                {"step_index": 4, "kind": "expect", "reason": "turn.ttfa_ms < 1500 (turn 0): got 1840.2"}
            ],
        ),
        _record(
            3,
            "booking",
            "failed:missed_turn",
            outcome_detail="no reply heard to turn(s) [0]",
            turns=[{"index": 0, "missed": True, "metrics": {"turn.ttfa_ms": None}}],
        ),
        _record(
            4,
            "booking",
            "failed:connect",
            outcome_detail="the websocket never opened",
            duration_ms=None,
            metrics={"call.create_ms": 40.0, "call.join_ms": None},
            turns=[],
            anchors={},
        ),
        _record(
            5,
            "support",
            "invalid:generator_overloaded",
            outcome_detail="pacer lateness p99 12.000 ms > half a chunk",
        ),
        _record(6, "support", "failed:create", call_id=None, duration_ms=None, turns=[], anchors={}),
        _record(
            7,
            "support",
            barge_ins=[
                {
                    "index": 0,
                    "success": True,
                    "metrics": {"interrupt.clear_ms": 100.0, "interrupt.silence_ms": 120.0},
                },
                {
                    "index": 1,
                    "success": False,
                    "metrics": {"interrupt.clear_ms": None, "interrupt.silence_ms": 900.0},
                },
            ],
            transcripts=[{"role": "agent", "text": "bad \x00 control \x1b char"}],
        ),
    ]


THRESHOLDS = [
    SimpleNamespace(metric="turn.ttfa_ms", expression="p(95) < 1200", passed=True, message="p(95)=812ms"),
    SimpleNamespace(metric="call.failed", expression="rate < 0.01", passed=False, message="rate=0.43 (3/7)"),
    SimpleNamespace(metric="interrupt.clear_ms", expression="max < 500", passed=None, message="no data"),
]


# -- junit.xml ------------------------------------------------------------------------------------


def _counts(element: ET.Element) -> tuple[int, int, int, int]:
    return tuple(int(element.get(k)) for k in ("tests", "failures", "errors", "skipped"))  # type: ignore[return-value]


def test_junit_counts_names_and_messages() -> None:
    text = junit_xml(_synthetic(), threshold_results=THRESHOLDS, timestamp="2026-08-20T10:00:00")
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    root = ET.fromstring(text.encode("utf-8"))
    assert root.tag == "testsuites"
    assert root.get("name") == "uvbench run"
    assert root.get("timestamp") == "2026-08-20T10:00:00"
    assert _counts(root) == (12, 4, 2, 2)
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert list(suites) == ["booking", "support", "checks", "thresholds"]
    assert _counts(suites["booking"]) == (4, 2, 1, 0)
    assert _counts(suites["support"]) == (3, 0, 1, 1)
    assert _counts(suites["checks"]) == (2, 1, 0, 0)  # call 2's two expectations, one failed
    assert _counts(suites["thresholds"]) == (3, 1, 0, 1)
    assert float(suites["booking"].get("time")) == pytest.approx(7.5)
    assert float(root.get("time")) == pytest.approx(12.5)

    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert len(cases) == 12  # names are unique
    first = cases["call 0001 00000001"]
    assert first.get("classname") == "booking" and first.get("time") == "2.500"
    assert first.find("failure") is None and first.find("error") is None
    assert "recording=calls/0001-booking.wav" in first.find("system-out").text
    assert "[agent] hello 1" in first.find("system-out").text

    expect = cases["call 0002 00000002"].find("failure")
    assert expect.get("type") == "expect"
    assert expect.get("message") == "step 4: turn.ttfa_ms < 1500 (turn 0): got 1840.2"
    assert "FAIL step 4" in expect.text and "turn 0" in expect.text and "ttfa 502 ms" in expect.text

    missed = cases["call 0003 00000003"].find("failure")
    assert missed.get("type") == "missed_turn"
    assert missed.get("message") == "no reply heard to turn(s) [0]"
    assert "MISSED" in missed.text

    error = cases["call 0004 00000004"].find("error")
    assert error.get("type") == "connect" and error.get("message") == "the websocket never opened"
    assert cases["call 0004 00000004"].get("time") == "0.000"
    assert cases["call 0006 no-call-id"].find("error").get("type") == "create"

    skipped = cases["call 0005 00000005"].find("skipped")
    assert skipped.get("message").startswith("invalid: generator overloaded")
    assert "p99 12.000 ms" in skipped.get("message")

    assert "bad  control  char" in cases["call 0007 00000007"].find("system-out").text

    assert cases["turn.ttfa_ms - p(95) < 1200"].find("failure") is None
    failed = cases["call.failed - rate < 0.01"].find("failure")
    assert failed.get("message") == "rate=0.43 (3/7)"
    assert cases["interrupt.clear_ms - max < 500"].find("skipped") is not None
    for case in root.iter("testcase"):
        for child in case:
            if child.get("message") is not None:
                assert "\n" not in child.get("message")


def test_junit_read_by_junitparser() -> None:
    junitparser = pytest.importorskip("junitparser")
    xml = junitparser.JUnitXml.fromstring(junit_xml(_synthetic(), threshold_results=THRESHOLDS).encode())
    suites = {s.name: s for s in xml}
    assert (xml.tests, xml.failures, xml.errors, xml.skipped) == (12, 4, 2, 2)
    assert (suites["booking"].tests, suites["booking"].failures, suites["booking"].errors) == (4, 2, 1)
    kinds: dict[str, list[str]] = {}
    for suite in xml:
        for case in suite:
            kinds[case.name] = [type(r).__name__ for r in case.result]
            if case.name == "call 0002 00000002":
                assert case.result[0].message.startswith("step 4: turn.ttfa_ms < 1500")
                assert case.result[0].type == "expect"
                assert case.classname == "booking"
    assert kinds["call 0001 00000001"] == []
    assert kinds["call 0003 00000003"] == ["Failure"]
    assert kinds["call 0004 00000004"] == ["Error"]
    assert kinds["call 0005 00000005"] == ["Skipped"]
    assert kinds["call.failed - rate < 0.01"] == ["Failure"]


def test_junit_of_a_real_run(real_run: Path) -> None:
    records = _results(real_run)
    root = ET.fromstring(junit_xml(records))
    expectations = len(records[0]["expectations"])  # each a check, passed
    assert expectations and _counts(root) == (1 + expectations, 0, 0, 0)
    assert _counts(root.find("testsuite[@name='checks']")) == (expectations, 0, 0, 0)
    (case,) = root.find("testsuite[@name='order-status']").iter("testcase")
    assert case.get("classname") == "order-status"
    assert case.get("name") == f"call 0001 {records[0]['call_id'][:8]}"
    assert float(case.get("time")) == pytest.approx(records[0]["duration_ms"] / 1000, abs=0.001)
    assert f"call_id={records[0]['call_id']}" in case.find("system-out").text


# -- calls.csv and stats.csv ----------------------------------------------------------------------


def test_calls_csv_of_a_real_run(real_run: Path) -> None:
    (record,) = _results(real_run)
    run = json.loads((real_run / "summary.json").read_text())["run"]
    rows = list(csv.DictReader(io.StringIO(calls_csv([record], run=run))))
    tags = [f"tag.{k}" for k in sorted(record["tags"]) if k != "start_offset_s"]
    assert tags and tuple(rows[0]) == CALLS_COLUMNS + tuple(tags)
    assert "call.end_reason" not in CALL_NUMERIC_METRICS and "call.create_ms" in CALL_NUMERIC_METRICS
    (row,) = rows
    assert row["scenario"] == "order-status" and row["outcome"] == record["outcome"]
    assert row["passed"] == ("true" if record["outcome"] == "completed" else "false")
    for name in CALL_NUMERIC_METRICS:
        # A figure set apart (a busy machine's loop lag, say) is not in `metrics`: an empty cell.
        value = record["metrics"].get(name)
        assert (row[name] == "") if value is None else (float(row[name]) == value), name
    assert int(row["turns"]) == len(record["turns"]) == 2
    # Over the turns whose TTFA stands (a busy machine may set one apart: docs/metrics.md).
    ttfa = [t["metrics"]["turn.ttfa_ms"] for t in record["turns"] if "turn.ttfa_ms" in t["metrics"]]
    if ttfa:
        assert float(row["turn.ttfa_ms.mean"]) == pytest.approx(sum(ttfa) / len(ttfa))
        assert float(row["turn.ttfa_ms.max"]) == max(ttfa)
    else:
        assert row["turn.ttfa_ms.mean"] == row["turn.ttfa_ms.max"] == ""
    assert row["barge_ins"] == "1"
    (barge_in,) = record["barge_ins"]
    for name, value in barge_in["metrics"].items():  # one barge-in: its figure is the mean and the max
        cells = (row[f"{name}.mean"], row[f"{name}.max"])
        assert cells == ("", "") if value is None else tuple(map(float, cells)) == (value, value), name
    assert (row["expectations_passed"], row["expectations_total"]) == ("5", "5")
    assert row["start_offset_s"] == "0.0" and row["started_at"] == datetime.fromisoformat(
        run["started_at"]
    ).isoformat(timespec="milliseconds")
    assert row["tag.attempt"] == "1" and row["tag.worker"] == "0"


def test_stats_csv_locust_layout() -> None:
    rows = list(csv.reader(io.StringIO(stats_csv(_synthetic()))))
    assert tuple(rows[0]) == STATS_COLUMNS
    by_name = {(r[0], r[1]): dict(zip(STATS_COLUMNS, r, strict=True)) for r in rows[1:]}
    assert [r[1] for r in rows[1:]] == [
        "booking:setup",
        "booking:ttfa",
        "support:clear",
        "support:setup",
        "support:silence",
        "support:ttfa",
        "Aggregated",
    ]
    assert rows[-1][0] == ""
    # span: call 1's websocket opens at 10 s, call 7's closes at 72.5 s
    span = 62.5
    setup = by_name[("call", "booking:setup")]
    assert (setup["Request Count"], setup["Failure Count"]) == ("4", "3")
    assert float(setup["Average Response Time"]) == 50.0 and setup["Median Response Time"] == "50"
    assert float(setup["Requests/s"]) == pytest.approx(4 / span)
    assert float(setup["Failures/s"]) == pytest.approx(3 / span)
    ttfa = by_name[("turn", "booking:ttfa")]
    assert (ttfa["Request Count"], ttfa["Failure Count"]) == ("3", "1")  # turn of call 3 missed
    assert (ttfa["Min Response Time"], ttfa["Max Response Time"]) == ("501.0", "502.0")
    assert ttfa["50%"] == "502" and ttfa["100%"] == "502"
    clear = by_name[("barge_in", "support:clear")]
    assert (clear["Request Count"], clear["Failure Count"], clear["Median Response Time"]) == (
        "2",
        "1",
        "100",
    )
    silence = by_name[("barge_in", "support:silence")]
    assert silence["50%"] == "900" and silence["66%"] == "900" and silence["Min Response Time"] == "120.0"
    support_setup = by_name[("call", "support:setup")]
    assert (support_setup["Request Count"], support_setup["Failure Count"]) == ("2", "1")
    total = by_name[("", "Aggregated")]
    assert total["Request Count"] == str(4 + 3 + 2 + 2 + 2 + 1)
    assert total["Failure Count"] == str(3 + 1 + 1 + 1 + 1)


def test_stats_csv_without_samples_says_na() -> None:
    record = _record(1, "x", "failed:create", turns=[], metrics={}, anchors={})
    rows = list(csv.reader(io.StringIO(stats_csv([record]))))
    setup = dict(zip(STATS_COLUMNS, rows[1], strict=True))
    assert (setup["Request Count"], setup["Failure Count"], setup["Requests/s"]) == ("1", "1", "0.0")
    assert setup["50%"] == "N/A" and setup["100%"] == "N/A"
    assert stats_csv([]).splitlines()[1].startswith(",Aggregated,0,0,")


def test_percentile_rule_is_locusts() -> None:
    times = [float(v) for v in range(1, 101)]
    assert response_time_percentile(times, 0.5) == 51.0
    assert response_time_percentile(times, 0.95) == 96.0
    assert response_time_percentile(times, 1.0) == 100.0
    assert response_time_percentile([7.0], 0.5) == 7.0
    assert response_time_percentile([], 0.5) is None


# -- rebuild --------------------------------------------------------------------------------------


def test_rebuild_reproduces_the_stored_metrics(run_copy: Path) -> None:
    before = _results(run_copy)
    call_before = json.loads(_call_json(run_copy).read_text())
    result = rebuild(run_copy)
    assert isinstance(result, RebuildResult) and result.warnings == []
    assert result.records == before
    assert _results(run_copy) == before
    assert json.loads(_call_json(run_copy).read_text()) == call_before
    for name in ("calls.csv", "stats.csv", "junit.xml"):
        assert (run_copy / name).is_file()
    run = json.loads((run_copy / "summary.json").read_text())["run"]
    assert (run_copy / "calls.csv").read_text() == calls_csv(before, run=run)
    assert (run_copy / "stats.csv").read_text() == stats_csv(before)
    junit = ET.parse(run_copy / "junit.xml").getroot()
    assert _counts(junit.find("testsuite[@name='order-status']")) == (1, 0, 0, 0)
    assert float(junit.get("time")) == run["duration_s"]


def test_rebuild_repairs_a_tampered_metric(run_copy: Path) -> None:
    good = _results(run_copy)[0]
    path = _call_json(run_copy)
    tampered = json.loads(path.read_text())
    tampered["metrics"]["call.duration_ms"] = 99999.0  # never set apart, even on a busy machine
    tampered["turns"][0]["metrics"]["turn.ttfa_ms"] = 1.0
    tampered["outcome"], tampered["passed"] = "failed:missed_turn", False
    tampered["transcripts"] = [{"role": "agent", "text": "kept as stored"}]
    path.write_text(json.dumps(tampered))
    (run_copy / "results.jsonl").write_text(json.dumps(tampered) + "\n")

    (record,) = rebuild(run_copy).records
    assert record["metrics"] == good["metrics"]
    assert record["turns"] == good["turns"]
    assert (record["outcome"], record["passed"]) == ("completed", True)
    assert record["transcripts"] == [{"role": "agent", "text": "kept as stored"}]  # not recomputed
    assert _results(run_copy) == [record]
    assert json.loads(path.read_text()) == record
    (row,) = csv.DictReader(io.StringIO((run_copy / "calls.csv").read_text()))
    assert float(row["call.duration_ms"]) == good["metrics"]["call.duration_ms"]


def test_rebuild_fails_the_call_on_a_stored_failed_expectation(run_copy: Path) -> None:
    timeline_path = run_copy / _results(run_copy)[0]["artifacts"]["timeline"]
    timeline = json.loads(timeline_path.read_text())
    timeline["events"] = [e for e in timeline["events"] if e[1] != "expect.checked"]
    timeline_path.write_text(json.dumps(timeline))
    path = _call_json(run_copy)
    stored = json.loads(path.read_text())
    stored["expectations"][1]["ok"] = False
    path.write_text(json.dumps(stored))

    (record,) = rebuild(run_copy).records
    assert record["outcome"] == "failed:expect" and record["passed"] is False
    assert record["metrics"]["call.outcome"] == "failed:expect"
    assert record["outcome_detail"].startswith(f"step {stored['expectations'][1]['step']}")
    root = ET.parse(run_copy / "junit.xml").getroot()
    assert _counts(root.find("testsuite[@name='order-status']")) == (1, 1, 0, 0)
    assert _counts(root.find("testsuite[@name='checks']"))[:2] == (len(stored["expectations"]), 1)


def test_rebuild_keeps_the_record_when_the_timeline_is_missing_or_corrupt(run_copy: Path) -> None:
    path = _call_json(run_copy)
    stored = json.loads(path.read_text())
    stored["metrics"]["call.create_ms"] = 12345.0
    path.write_text(json.dumps(stored))
    timeline_path = run_copy / stored["artifacts"]["timeline"]

    timeline_path.write_text('{"events": [')
    result = rebuild(run_copy)
    assert len(result.warnings) == 1 and "unreadable" in result.warnings[0]
    assert result.records[0]["metrics"]["call.create_ms"] == 12345.0

    timeline_path.unlink()
    result = rebuild(run_copy)
    assert len(result.warnings) == 1 and "missing" in result.warnings[0]
    assert result.records == [stored]
    assert _results(run_copy) == [stored]


def test_rebuild_falls_back_to_results_jsonl_for_an_unreadable_call_record(run_copy: Path) -> None:
    before = _results(run_copy)
    _call_json(run_copy).write_text("{not json")
    result = rebuild(run_copy)
    assert len(result.warnings) == 1 and "results.jsonl" in result.warnings[0]
    assert result.records == before
    assert json.loads(_call_json(run_copy).read_text()) == before[0]


def test_rebuild_needs_a_run_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        rebuild(tmp_path)
    (tmp_path / "calls").mkdir()
    result = rebuild(tmp_path)
    assert result.records == [] and result.warnings
    assert not (tmp_path / "results.jsonl").exists()


def test_write_text_replaces_the_file_whole(tmp_path: Path) -> None:
    from uvbench.report.run_folder import write_text

    path = tmp_path / "calls.csv"
    path.write_text("old\n")
    write_text(path, "new ✓\n")
    assert path.read_text(encoding="utf-8") == "new ✓\n"
    assert [p.name for p in tmp_path.iterdir()] == ["calls.csv"]  # no temporary file left behind


# -- results.jsonl's own order, big folders, call JSONs left alone when unchanged --------------------


def _copies(source: Path, folder: Path, stems: list[str], order: list[int]) -> list[str]:
    """A run folder of copies of `source`'s one call under `stems` (each its own call id and run-wide
    tags, its call JSON and results.jsonl line alike), results.jsonl listing them in `order`.
    Returns results.jsonl's lines."""
    (record,) = _results(source)
    timeline = source / record["artifacts"]["timeline"]
    (folder / "calls").mkdir(parents=True)
    lines = []
    for k, stem in enumerate(stems):
        shutil.copyfile(timeline, folder / "calls" / f"{stem}.timeline.json")
        copy = {
            **record,
            "call_id": f"{k:08d}-0000-4000-8000-000000000000",
            "tags": {**record["tags"], "vu": k % 3, "iteration": k, "worker": k % 2, "stage": f"s{k % 4}"},
            "stage": f"s{k % 4}",
            "concurrency": 1 + k % 3,
            "artifacts": {"timeline": f"calls/{stem}.timeline.json"},
        }
        (folder / "calls" / f"{stem}.json").write_text(json.dumps(copy, indent=2))
        lines.append(json.dumps(copy) + "\n")
    text = "".join(lines[k] for k in order)
    (folder / "results.jsonl").write_text(text)
    return [lines[k] for k in order]


def _report(folder: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "uvbench", "report", str(folder)], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warning" not in done.stderr, done.stderr


def test_report_rebuilds_results_jsonl_byte_for_byte_in_its_own_order(real_run: Path, tmp_path: Path) -> None:
    folder = tmp_path / "20260101-000000-shuffled"
    stems = [f"{n:04d}-order-status" for n in range(1, 7)]
    lines = _copies(real_run, folder, stems, [3, 0, 5, 1, 4, 2])  # not the files' order
    before = (folder / "results.jsonl").read_bytes()
    calls_before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (folder / "calls").glob("*")}
    _report(folder)
    assert (folder / "results.jsonl").read_bytes() == before
    # Every call JSON was already its rebuilt record: left as it was, not written again.
    for p in (folder / "calls").glob("*"):
        assert (p.read_bytes(), p.stat().st_mtime_ns) == calls_before[p.name], p.name
    # The run-wide tags came through untouched.
    assert [json.loads(line)["tags"] for line in (folder / "results.jsonl").read_text().splitlines()] == [
        json.loads(line)["tags"] for line in lines
    ]
    assert (folder / "report.html").is_file() and (folder / "junit.xml").is_file()


def test_calls_only_in_calls_come_after_in_file_order(real_run: Path, tmp_path: Path) -> None:
    folder = tmp_path / "20260101-000000-partial"
    stems = [f"{n:04d}-order-status" for n in range(1, 6)]
    lines = _copies(real_run, folder, stems, [4, 2, 0, 3, 1])
    # Calls 0002 and 0004 are missing from results.jsonl; a line whose call files are gone is dropped.
    gone = json.loads(lines[0])
    gone["artifacts"] = {"timeline": "calls/0099-gone.timeline.json"}
    missing = {"calls/0002-order-status.timeline.json", "calls/0004-order-status.timeline.json"}
    kept = [line for line in lines if json.loads(line)["artifacts"]["timeline"] not in missing]
    (folder / "results.jsonl").write_text(kept[0] + json.dumps(gone) + "\n" + "".join(kept[1:]))
    by_stem = {json.loads(line)["artifacts"]["timeline"]: line for line in lines}
    result = rebuild(folder, jobs=1)
    expected = kept + [
        by_stem["calls/0002-order-status.timeline.json"],
        by_stem["calls/0004-order-status.timeline.json"],
    ]
    assert (folder / "results.jsonl").read_text() == "".join(expected)
    assert [json.dumps(r) + "\n" for r in result.records] == expected


def test_a_big_folder_rebuilds_alike_with_a_pool_of_processes(real_run: Path, tmp_path: Path) -> None:
    from uvbench.report.rebuild import POOL_MIN_CALLS

    n = POOL_MIN_CALLS + 40
    order = list(range(n))
    order[0::2] = reversed(order[0::2])  # every other call out of file order
    folder = tmp_path / "20260101-000000-big"
    _copies(real_run, folder, [f"{k:05d}-order-status" for k in range(n)], order)
    before = (folder / "results.jsonl").read_bytes()
    pooled = rebuild(folder, jobs=2, reports=False)
    assert (folder / "results.jsonl").read_bytes() == before and pooled.warnings == []
    alone = rebuild(folder, jobs=1, reports=False)
    assert alone.records == pooled.records and (folder / "results.jsonl").read_bytes() == before
    light = rebuild(folder, jobs=2, reports=False, light=True)
    assert [
        {k: v for k, v in r.items() if k not in ("api_messages", "ground_truth")} for r in alone.records
    ] == (light.records)


def test_a_changed_call_json_is_written_as_the_run_writes_it(run_copy: Path) -> None:
    path = _call_json(run_copy)
    stored = json.loads(path.read_text())
    stored["metrics"]["call.duration_ms"] = 12345.0  # never set apart, even on a busy machine
    path.write_text(json.dumps(stored))  # another layout, and a figure to repair
    (record,) = rebuild(run_copy).records
    assert path.read_text() == json.dumps(record, indent=2)
    assert record["metrics"]["call.duration_ms"] != 12345.0


def test_record_json_writes_what_json_dumps_writes() -> None:
    from uvbench.report.run_folder import compact_json, record_json

    values: list[Any] = [
        {},
        [],
        {"a": [], "b": {}, "c": [[], {}], "d": ""},
        {"text": 'é ✓ \n " \\ \u2028 \x00', "ü": 1, "none": None, "t": True, "f": False},
        {"floats": [0.1, -0.0, 1e300, 5e-324, 1.0, 123456789.125, float("nan"), float("inf"), -float("inf")]},
        {"ints": [0, -1, 2**70, True, False]},
        {"nested": {"deep": [{"x": [1, [2, [3, {"y": None}]]]}]}},
        {"tuple": (1, 2, (3,))},
        {1: "int key", 2.5: "float key", None: "none key", False: "bool key"},  # json.dumps's own
        "a string",
        3.25,
        None,
    ]
    for value in values:
        assert record_json(value) == json.dumps(value, indent=2), value
        assert compact_json(json.dumps(value, indent=2)) == json.dumps(value), value
    with pytest.raises(TypeError):
        record_json({"x": object()})
    with pytest.raises(ValueError):
        looped: list[Any] = []
        looped.append(looped)
        record_json(looped)


def test_tables_made_call_by_call_are_the_tables() -> None:
    """calls.csv and junit.xml from rows and testcases made record by record (as the processes that
    rebuild a big run make them) are the files made from the records at once."""
    from types import SimpleNamespace

    from uvbench.report.csv_report import calls_csv_line
    from uvbench.report.junit import testcase

    records = _synthetic() + [
        _record(7, 'other <&> "x"', "invalid:generator_overloaded"),
        _record(8, "booking", "failed:error", artifacts={}),  # no file name: named by its position
        _record(9, "booking", transcripts=[{"role": "agent", "text": "a\x01b <c> & \u2028 é"}]),
    ]
    thresholds = [
        SimpleNamespace(metric="turn.ttfa_ms", expression="p(95) < 1", passed=False, message="p95=900"),
        SimpleNamespace(metric="call.success_pct", expression="> 99", passed=None, message=""),
    ]
    cases = [testcase(r, None) for r in records]
    assert cases[-2] is None and all(c is not None for c in cases[:-2] + cases[-1:])
    stamp = "2026-01-01T00:00:00"
    assert junit_xml(records, threshold_results=thresholds, timestamp=stamp, cases=cases) == junit_xml(
        records, threshold_results=thresholds, timestamp=stamp
    )
    assert calls_csv(records, lines=[calls_csv_line(r) for r in records]) == calls_csv(records)


def test_junit_counts_a_dead_pacing_process_as_an_error() -> None:
    from uvbench.report.run_folder import generator_failures

    summary = {"workers": {"failed": [{"worker": 1, "message": "worker 1 of 2 stopped (exit code 70)"}]}}
    xml = junit_xml(_synthetic(), generator_failures=generator_failures(summary))
    root = ET.fromstring(xml)
    suite = root.find("testsuite[@name='load generator']")
    assert suite is not None and suite.get("errors") == "1" and suite.get("tests") == "1"
    error = suite.find("testcase/error")
    assert error is not None and error.get("message") == "worker 1 of 2 stopped (exit code 70)"
    plain = ET.fromstring(junit_xml(_synthetic()))
    assert int(root.get("errors")) == int(plain.get("errors")) + 1
    assert generator_failures({}) == []


def test_read_results_skips_a_cut_line_and_leaves_keys_out(tmp_path: Path) -> None:
    from uvbench.report.run_folder import read_results

    path = tmp_path / "results.jsonl"
    first = {"outcome": "completed", "scenario": "a", "ground_truth": {"big": 1}, "metrics": {}}
    second = {"outcome": "failed:create", "scenario": "b", "metrics": {}}
    # A run killed mid-write leaves half a line; binary junk and a non-record line are skipped too.
    path.write_bytes(
        (json.dumps(first) + "\n" + json.dumps(second) + "\n").encode() + b'{"outcome": "compl\xc3\n[1, 2]\n'
    )
    assert read_results(path) == [first, second]
    assert read_results(path, leave_out=("ground_truth",)) == [
        {k: v for k, v in first.items() if k != "ground_truth"},
        second,
    ]


# -- run metadata in the tables: calls' start times, tags, reasons, every figure; JUnit's times ------

RUN = {
    "started_at": "2026-08-20T10:00:00.250+02:00",
    "ended_at": "2026-08-20T10:01:26.250+02:00",
    "duration_s": 86.0,
}


def _timed() -> list[dict[str, Any]]:
    """`_synthetic()` placed in an 86 s run: call n starts n seconds in, with run-wide tags (a suite's
    `team` tag on the support calls only)."""
    records = _synthetic()
    for n, record in enumerate(records, start=1):
        record["tags"] = {"vu": n % 3, "iteration": n - 1, "stage": None, "start_offset_s": float(n)}
        if record["scenario"] == "support":
            record["tags"]["team"] = "care, west"  # a comma: quoted, never a ragged row
    return records


def test_calls_csv_dates_each_call_and_has_its_tags_reason_and_every_figure() -> None:
    records = _timed()
    text = calls_csv(records, run=RUN)
    reader = csv.reader(io.StringIO(text))
    header = next(reader)
    body = list(reader)
    assert tuple(header) == CALLS_COLUMNS + ("tag.iteration", "tag.stage", "tag.team", "tag.vu")
    assert len(body) == len(records) and all(len(cells) == len(header) for cells in body)
    rows = [dict(zip(header, cells, strict=True)) for cells in body]
    start = datetime.fromisoformat(RUN["started_at"])
    for n, row in enumerate(rows, start=1):
        assert float(row["start_offset_s"]) == n
        at = datetime.fromisoformat(row["started_at"])
        assert at.utcoffset() == start.utcoffset() and (at - start).total_seconds() == n
        assert row["tag.iteration"] == str(n - 1) and row["tag.stage"] == ""
    assert rows[0]["started_at"] == "2026-08-20T10:00:01.250+02:00"
    assert [r["tag.team"] for r in rows] == ["", "", "", "", "care, west", "care, west", "care, west"]
    assert rows[2]["outcome_detail"] == "no reply heard to turn(s) [0]" and rows[0]["outcome_detail"] == ""
    barge_ins = rows[6]  # call 7: two barge-ins, silence 120 and 900 ms, one clear of 100 ms
    assert float(barge_ins["interrupt.silence_ms.mean"]) == 510.0
    assert float(barge_ins["interrupt.silence_ms.max"]) == 900.0
    assert float(barge_ins["interrupt.clear_ms.mean"]) == float(barge_ins["interrupt.clear_ms.max"]) == 100.0
    assert barge_ins["interrupt.response_ms.mean"] == "" and rows[0]["interrupt.silence_ms.max"] == ""
    assert float(rows[0]["turn.ttfa_ms.max"]) == 501.0


def test_calls_csv_header_depends_on_the_tags_only_and_the_fast_path_is_the_same_file() -> None:
    from uvbench.report.csv_report import calls_csv_line
    from uvbench.report.run_folder import run_start

    records = _timed()
    bare = [{**r, "turns": [], "barge_ins": [], "metrics": {}} for r in records]  # nothing measured
    assert calls_csv(records, run=RUN).splitlines()[0] == calls_csv(bare, run=RUN).splitlines()[0]
    lines = [calls_csv_line(r, run_start(RUN)) for r in records]
    assert calls_csv(records, lines=lines) == calls_csv(records, run=RUN)
    # Without the run's start (an old run folder) the start time is empty, the offset stays.
    (row, *_) = csv.DictReader(io.StringIO(calls_csv(records)))
    assert row["started_at"] == "" and row["start_offset_s"] == "1.0"


def test_junit_time_is_the_runs_and_its_timestamp_the_start() -> None:
    junitparser = pytest.importorskip("junitparser")
    records = _timed()
    xml = junitparser.JUnitXml.fromstring(junit_xml(records, threshold_results=THRESHOLDS, run=RUN).encode())
    assert xml.time == 86.0  # not the sum of the calls' durations
    assert xml._elem.get("timestamp") == "2026-08-20T10:00:00"  # the run's own local time, no offset
    suites = {s.name: s for s in xml}
    assert {s.timestamp for s in xml} == {"2026-08-20T10:00:00"}
    # A scenario's calls' span: booking's calls start at 1..4 s, the last 2.5 s call ends at 5.5 s
    # (call 4 never connected: no duration); support's from 5 s to call 7's end at 9.5 s.
    assert suites["booking"].time == pytest.approx(4.5)
    assert suites["support"].time == pytest.approx(4.5)
    assert suites["checks"].time == suites["thresholds"].time == 0
    # Without the run: the sums, as before.
    plain = junitparser.JUnitXml.fromstring(junit_xml(records, timestamp="2026-01-01T00:00:00").encode())
    assert plain.time == pytest.approx(12.5)


def test_junit_lists_every_failed_expectation_and_counts_checks() -> None:
    junitparser = pytest.importorskip("junitparser")

    def expectations(first_ok: bool, second_ok: bool) -> list[dict[str, Any]]:
        return [
            {"step": 2, "ok": first_ok, "what": "agent transcript contains 'order'", "detail": "heard: hi",
             "name": "greets"},
            {"step": 5, "ok": second_ok, "what": "turn.ttfa_ms < 900 (turn 1)", "detail": "got 1210.4",
             "name": None},
        ]  # fmt: skip

    records = [
        _record(1, "booking", "failed:expect", expectations=expectations(False, False)),
        _record(2, "booking", "failed:expect", expectations=expectations(True, False)),
        _record(3, "booking", expectations=expectations(True, True)),
        _record(4, "booking", "failed:missed_turn", expectations=expectations(False, True)),
        _record(5, "booking", "invalid:generator_overloaded", expectations=expectations(False, False)),
    ]
    xml = junitparser.JUnitXml.fromstring(junit_xml(records, run=RUN).encode())
    suites = {s.name: s for s in xml}
    cases = {case.name: case for case in suites["booking"]}
    (both,) = cases["call 0001 00000001"].result
    assert both.type == "expect" and both.message == (
        "2 expectations failed: step 2 (greets): agent transcript contains 'order': heard: hi; "
        "step 5: turn.ttfa_ms < 900 (turn 1): got 1210.4"
    )
    assert "FAIL step 2 (greets)" in both.text and "FAIL step 5:" in both.text
    (one,) = cases["call 0002 00000002"].result
    assert one.message == "step 5: turn.ttfa_ms < 900 (turn 1): got 1210.4"
    (missed,) = cases["call 0004 00000004"].result  # another failure, and a failed expectation
    assert missed.message == (
        "detail of failed:missed_turn; step 2 (greets): agent transcript contains 'order': heard: hi"
    )

    checks = suites["checks"]  # the invalid call 5 is not counted
    assert (checks.tests, checks.failures, checks.errors, checks.skipped) == (2, 2, 0, 0)
    by_name = {case.name: case for case in checks}
    greets = by_name["booking: greets: agent transcript contains 'order'"]
    ttfa = by_name["booking: step5: turn.ttfa_ms < 900 (turn 1)"]
    assert greets.classname == "checks" and greets.result[0].type == "check"
    assert greets.result[0].message == (
        "2/4 calls failed: agent transcript contains 'order'; call 00000001-aaaa-bbbb-cccc-dddddddddddd: "
        "heard: hi; call 00000004-aaaa-bbbb-cccc-dddddddddddd: heard: hi"
    )
    assert ttfa.result[0].message.startswith("2/4 calls failed: turn.ttfa_ms < 900 (turn 1); call 00000001")
    assert "2 of 4 calls failed it, 2 passed" in ttfa.result[0].text
    passing = junitparser.JUnitXml.fromstring(junit_xml([records[2]]).encode())
    (case,) = [c for s in passing if s.name == "checks" for c in s][:1]
    assert case.result == [] and case.system_out == "1/1 calls passed"
    assert [s.name for s in junitparser.JUnitXml.fromstring(junit_xml(_synthetic()[:1]).encode())] == [
        "booking"
    ]  # no expectation checked: no checks suite


def test_a_baseline_that_cannot_judge_is_skipped_and_keeps_the_runs_time() -> None:
    from uvbench.report.junit import add_baseline_case

    text = junit_xml(_timed(), run=RUN)
    skipped = ET.fromstring(
        add_baseline_case(text, baseline="b", regressed=[], not_judged="compare: not enough data")
    )
    case = skipped.find("testsuite[@name='baseline']/testcase")
    assert case is not None and case.find("skipped").get("message") == "compare: not enough data"
    assert float(skipped.get("time")) == 86.0
    assert int(skipped.get("skipped")) == int(ET.fromstring(text).get("skipped")) + 1


def test_report_keeps_the_runs_metadata_and_dates_the_calls_from_it(run_copy: Path) -> None:
    """`uvbench report DIR` (rows made where each call is rebuilt) dates the calls by summary.json's
    `run`, which it keeps as the run wrote it."""
    run = json.loads((run_copy / "summary.json").read_text())["run"]
    _report(run_copy)
    assert json.loads((run_copy / "summary.json").read_text())["run"] == run
    (record,) = _results(run_copy)
    (row,) = csv.DictReader(io.StringIO((run_copy / "calls.csv").read_text()))
    start = datetime.fromisoformat(run["started_at"])
    offset = record["tags"]["start_offset_s"]
    assert datetime.fromisoformat(row["started_at"]) == start + timedelta(seconds=offset)
    assert row["tag.vu"] == str(record["tags"]["vu"])


def test_the_rebuild_pool_workers_end_quietly_when_the_pool_stops_them() -> None:
    # `uvbench report` installs the CLI's SIGTERM handler (raise Terminated: a run's clean stop);
    # the pool stops its workers with SIGTERM on the way out, and a worker running that handler
    # printed "uvbench.cli.Terminated" under the report's last line.
    import multiprocessing
    import signal
    import time

    from uvbench.report.rebuild import _default_sigterm, _pool_context

    def raise_on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGTERM, raise_on_term)
    try:
        pool = _pool_context().Pool(1, initializer=_default_sigterm)
        assert pool.apply(int, ("7",)) == 7
        (worker,) = multiprocessing.active_children()
        pool.apply_async(time.sleep, (30,))  # busy: the pool's stop reaches it as SIGTERM
        time.sleep(0.3)
        pool.terminate()
        pool.join()
        deadline = time.monotonic() + 10
        while worker.exitcode is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert worker.exitcode == -signal.SIGTERM  # ended by the signal, not by an exception
    finally:
        signal.signal(signal.SIGTERM, before)
