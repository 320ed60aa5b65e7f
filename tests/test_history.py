"""Run history: finish_run appends each run to <out>/history.sqlite; a rebuild replaces its rows;
history_points and `uvbench history` read it back, newest last."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from uvbench.cli import main as cli
from uvbench.metrics.aggregate import aggregate
from uvbench.report.finish import finish_run
from uvbench.report.history import (
    DB_NAME,
    SCHEMA_VERSION,
    HistoryError,
    history_for_run,
    history_points,
    record_run,
    run_meta,
)


def record(
    ttfa: float, *, scenario: str = "booking", outcome: str = "completed", vu: int = 0
) -> dict[str, Any]:
    return {
        "scenario": scenario,
        "outcome": outcome,
        "passed": outcome == "completed",
        "target": "local",
        "concurrency": vu + 1,
        "tags": {"vu": vu, "stage": None},
        "metrics": {
            "call.first_audio_ms": ttfa / 2,
            "call.underflow_count": 1,
            "call.agent_audio_ms": 60_000.0,
            "call.outcome": outcome,
        },
        "turns": [
            {
                "index": 0,
                "missed": False,
                "metrics": {"turn.ttfa_ms": ttfa, "turn.agent_audio_ms": 60_000.0, "turn.underflow_count": 1},
            }
        ],
        "barge_ins": [],
        "expectations": [],
    }


def make_run(
    reports: Path, name: str, ttfas: list[float], **kwargs: Any
) -> tuple[Path, list[dict[str, Any]]]:
    folder = reports / name
    (folder / "calls").mkdir(parents=True)
    records = [record(t, vu=i % 2, **kwargs) for i, t in enumerate(ttfas)]
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "summary.json").write_text(json.dumps({"calls": len(records)}))
    return folder, records


def test_two_finished_runs_are_two_points_oldest_first(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    first, first_records = make_run(reports, "20260101-100000-checkout", [500, 600, 700, 800])
    second, second_records = make_run(reports, "20260102-090000-checkout", [900, 1000, 1100, 1200])
    finish_run(second, second_records, [])  # finished in either order: sorted by start time
    finish_run(first, first_records, [])
    db = reports / DB_NAME
    assert db.is_file()
    points = history_points(db)
    assert [p["run"] for p in points] == [first.name, second.name]
    assert points[0]["started"] == "2026-01-01T10:00:00"
    assert points[0]["metrics"] == {"turn.ttfa_ms.p95": aggregate(first_records).metrics["turn.ttfa_ms"].p95}
    assert points[1]["metrics"]["turn.ttfa_ms.p95"] == pytest.approx(1185.0)
    assert history_for_run(second) == points  # what a report page of that run plots
    # A page shows the history as it was when the page was written: the run finished last
    # (`first`) plots both runs; the one finished before it had only itself to show.
    page = (first / "report.html").read_text()
    assert 'id="history"' in page and "<svg" in page.split('id="history"')[1]
    assert "Fewer than two runs" in (second / "report.html").read_text()
    assert history_for_run(tmp_path / "elsewhere" / "20260101-100000-x") is None
    both = history_points(db, metric=["turn.ttfa_ms", "call.success_pct"], stat=["p50", "count"], limit=1)
    assert both == [
        {
            "run": second.name,
            "started": "2026-01-02T09:00:00",
            "metrics": {
                "turn.ttfa_ms.p50": 1050.0,
                "turn.ttfa_ms.count": 4.0,
                "call.success_pct.value": 100.0,
            },
        }
    ]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            str(SCHEMA_VERSION),
        )
        name, target, profile = conn.execute(
            "SELECT name, target, profile FROM runs WHERE run_id = ?", (first.name,)
        ).fetchone()
    assert (name, target) == ("checkout", "local")
    assert json.loads(profile) == {"calls": 4, "vus": 2, "max_concurrency": 2, "stages": None, "scenarios": 1}


def test_rebuilding_a_run_replaces_its_rows(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    folder, records = make_run(reports, "20260101-100000-checkout", [500, 600, 700, 800])
    finish_run(folder, records, [])
    db = reports / DB_NAME

    def rows() -> int:
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT COUNT(*) FROM figures").fetchone()[0]

    before = rows()
    records[0]["turns"][0]["metrics"]["turn.ttfa_ms"] = 5000.0  # a metric fixed, the run rebuilt
    finish_run(folder, records, [])
    (point,) = history_points(db, stat="p50")
    assert point["metrics"]["turn.ttfa_ms.p50"] == 750.0
    assert rows() == before
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM runs").fetchone() == (1,)


def test_per_scenario_figures_rates_and_name_filter(tmp_path: Path) -> None:
    db = tmp_path / DB_NAME
    a, a_records = make_run(tmp_path, "20260101-100000-checkout", [500, 600])
    b, b_records = make_run(tmp_path, "20260101-110000-booking", [700, 800], scenario="book")
    b_records[0]["outcome"] = "failed:missed_turn"
    record_run(db, a, a_records)
    record_run(db, b, b_records)
    assert [p["run"] for p in history_points(db, name="booking")] == [b.name]
    (point,) = history_points(db, name="booking", metric="call.success_pct", stat="p95")
    assert point["metrics"] == {"call.success_pct.value": 50.0}  # a rate has its value only
    (point,) = history_points(db, name="booking", metric="audio.underflow_per_min")
    assert point["metrics"] == {"audio.underflow_per_min.value": 1.0}
    (point,) = history_points(db, metric="turn.ttfa_ms", stat="p50", scenario="book")
    assert point == {"run": b.name, "started": "2026-01-01T11:00:00", "metrics": {"turn.ttfa_ms.p50": 750.0}}
    assert history_points(db, metric="turn.nothing_ms") == []


def test_run_meta_of_a_folder_without_a_time_stamp(tmp_path: Path) -> None:
    folder, records = make_run(tmp_path, "my-run", [500])
    meta = run_meta(folder, records)
    assert meta["run_id"] == meta["name"] == "my-run" and len(meta["started"]) == 19


def test_concurrent_runs_all_land(tmp_path: Path) -> None:
    db = tmp_path / DB_NAME
    runs = [make_run(tmp_path, f"20260101-1000{i:02d}-load", [500 + i] * 20) for i in range(8)]
    errors: list[BaseException] = []

    def write(folder: Path, records: list[dict[str, Any]]) -> None:
        try:
            for _ in range(3):
                record_run(db, folder, records)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=run) for run in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    points = history_points(db, stat="p50", limit=None)
    assert [p["metrics"]["turn.ttfa_ms.p50"] for p in points] == [500.0 + i for i in range(8)]


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / DB_NAME
    folder, records = make_run(tmp_path, "20260101-100000-x", [500])
    record_run(db, folder, records)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(HistoryError, match="newer than this uvbench"):
        record_run(db, folder, records)
    with pytest.raises(HistoryError, match="newer than this uvbench"):
        history_points(db)
    # finish_run keeps going and says why the history was not written
    lines = finish_run(folder, records, []).lines
    assert any(line.startswith("uvbench: warning: run history not updated") for line in lines)


def test_history_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "reports" / DB_NAME
    assert cli(["history", "--db", str(db)]) == 0
    assert capsys.readouterr().out.strip() == f"no history yet at {db}: run `uvbench run` first"

    for i, base in enumerate((500, 700, 600)):
        folder, records = make_run(
            tmp_path / "reports", f"2026010{i + 1}-100000-checkout", [base, base + 100]
        )
        record_run(db, folder, records)
    assert cli(["history", "--db", str(db), "--stat", "p50"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "turn.ttfa_ms p50: the last 3 runs, newest last"
    assert [line.split()[0] for line in lines[2:5]] == [
        "20260101-100000-checkout",
        "20260102-100000-checkout",
        "20260103-100000-checkout",
    ]
    assert "550 ms" in lines[2] and "+200 ms" in lines[3] and "-100 ms" in lines[4]
    assert lines[-1] == "trend ▁█▅  (min 550 ms, max 750 ms)"

    assert cli(["history", "--db", str(db), "--last", "2", "--json", "--metric", "call.success_pct"]) == 0
    points = json.loads(capsys.readouterr().out)
    assert points == history_points(db, metric="call.success_pct", limit=2)
    assert [p["metrics"] for p in points] == [{"call.success_pct.value": 100.0}] * 2

    assert cli(["history", "--db", str(db), "--metric", "turn.ttfa"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no figures of 'turn.ttfa'" in err[0] and "turn.ttfa_ms" in err[0]
    assert cli(["history", "--db", str(db), "--name", "nope"]) == 2
    assert "no runs named 'nope'" in capsys.readouterr().err


def test_a_run_is_aggregated_once_at_its_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """finish_run's aggregate serves the summary, the history rows and the page's plots alike (the
    plots grouped by concurrency or by buffer size group the calls their own way)."""
    import uvbench.report.finish as finish_mod
    import uvbench.report.history as history_mod
    import uvbench.report.html as html_mod
    import uvbench.report.plots as plots_mod

    calls: list[int] = []

    def counting(records: Any, **kwargs: Any) -> Any:
        records = list(records)
        if kwargs.get("by") in (None, "scenario"):
            calls.append(len(records))
        return aggregate(records, **kwargs)

    for mod in (finish_mod, history_mod, html_mod, plots_mod):
        monkeypatch.setattr(mod, "aggregate", counting)
    folder, records = make_run(tmp_path / "reports", "20260101-100000-checkout", [500, 600, 700, 800])
    records.append(record(9000, outcome="invalid:generator_overloaded"))
    finish_run(folder, records, [])
    assert calls == [len(records)]
    assert (folder / "report.html").is_file()
    (point,) = history_points(tmp_path / "reports" / DB_NAME)
    assert point["metrics"] == {"turn.ttfa_ms.p95": aggregate(records[:4]).metrics["turn.ttfa_ms"].p95}


def test_finish_run_merges_extra_into_the_summary_in_one_write(tmp_path: Path) -> None:
    folder, records = make_run(tmp_path / "reports", "20260101-100000-checkout", [500, 600])
    (folder / "summary.json").write_text(json.dumps({"calls": 2, "load": None, "interrupted": False}))
    finish_run(folder, records, [], {"load": {"executor": "constant-vus", "vus": 2}, "knee": {"held": 4}})
    summary = json.loads((folder / "summary.json").read_text())
    assert list(summary) == ["calls", "load", "interrupted", "checks", "knee", "aggregate", "thresholds"]
    assert summary["load"] == {"executor": "constant-vus", "vus": 2} and summary["knee"] == {"held": 4}
    with sqlite3.connect(tmp_path / "reports" / DB_NAME) as conn:  # the history saw the merged load
        (profile,) = conn.execute("SELECT profile FROM runs").fetchone()
    assert json.loads(profile)["load"] == {"executor": "constant-vus", "vus": 2}
