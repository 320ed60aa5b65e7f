"""`uvbench report DIR`: recompute a saved run's figures from its timelines and rewrite its reports.

Metrics are a pure function of a call's timeline, so a run folder can be re-analysed after a metric
is fixed. For each call (`calls/<stem>.json`, in call order) the figures, outcome and anchors are
recomputed from `calls/<stem>.timeline.json`; everything else of the record is kept, expectations
included (checking them again needs the live transcripts: their stored results stand, and a failed
one fails the call as in `uvbench.runner.run`). Then `results.jsonl` and every call JSON are
rewritten, and `calls.csv`, `stats.csv` and `junit.xml` are written into the folder.

A call whose timeline is missing or unreadable keeps its stored record; a warning says so.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uvbench.call.timeline import Timeline
from uvbench.metrics import compute
from uvbench.report.csv_report import calls_csv, stats_csv
from uvbench.report.junit import junit_xml
from uvbench.report.run_folder import load_timeline, write_text

RECOMPUTED = ("metrics", "set_apart", "turns", "barge_ins", "underflows", "anchors", "ping_rtts_ms")
"""Record keys replaced by the recomputed figures (plus outcome, outcome_detail, passed,
duration_ms and end_reason, which derive from them)."""


@dataclass
class RebuildResult:
    records: list[dict[str, Any]]
    """Every call's record, in call order, as rewritten."""
    warnings: list[str] = field(default_factory=list)
    """Calls that kept their stored record (timeline missing or corrupt) or could not be read."""


def _call_files(run_dir: Path) -> list[Path]:
    calls = run_dir / "calls"
    if not calls.is_dir():
        return []
    return sorted(p for p in calls.glob("*.json") if not p.name.endswith(".timeline.json") and p.is_file())


def _timeline_path(run_dir: Path, call_file: Path, record: dict[str, Any]) -> Path:
    stored = (record.get("artifacts") or {}).get("timeline")
    if isinstance(stored, str) and stored:
        return run_dir / stored
    return call_file.with_name(call_file.name[: -len(".json")] + ".timeline.json")


def _stored_expect_failure(record: dict[str, Any]) -> tuple[str, str] | None:
    for e in record.get("expectations") or []:
        if e.get("ok") is False:
            return "failed:expect", f"step {e.get('step')}: {e.get('what')}: {e.get('detail')}"
    return None


def recompute_record(record: dict[str, Any], timeline: Timeline) -> dict[str, Any]:
    """The record with its figures and outcome recomputed from `timeline` (a new dict)."""
    m = compute(timeline).to_json()
    out = dict(record)
    for key in RECOMPUTED:
        out[key] = m[key]
    outcome, detail = m["outcome"], m["outcome_detail"]
    # The run records each checked expectation in the timeline (`expect.checked`), so compute() sees
    # a failed one; a timeline without those events still fails on the stored results.
    if outcome == "completed" and not timeline.of_kind("expect.checked"):
        failed = _stored_expect_failure(record)
        if failed is not None:
            outcome, detail = failed
            out["metrics"]["call.outcome"] = outcome
    out["outcome"] = outcome
    out["outcome_detail"] = detail
    out["passed"] = outcome == "completed"
    out["duration_ms"] = out["metrics"].get("call.duration_ms")
    out["end_reason"] = out["metrics"].get("call.end_reason")
    return out


def _stored_results(run_dir: Path) -> dict[str, dict[str, Any]]:
    """results.jsonl's records by their timeline artifact: the fallback for an unreadable call JSON."""
    by_timeline: dict[str, dict[str, Any]] = {}
    try:
        lines = (run_dir / "results.jsonl").read_text(encoding="utf-8").splitlines()
    except OSError:
        return by_timeline
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        timeline = (record.get("artifacts") or {}).get("timeline") if isinstance(record, dict) else None
        if isinstance(timeline, str):
            by_timeline[timeline] = record
    return by_timeline


def _read_record(call_file: Path, fallback: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], str | None]:
    """The call's record and, when its JSON was unreadable and results.jsonl stood in, a warning."""
    try:
        record = json.loads(call_file.read_text(encoding="utf-8"))
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
        return record, None
    except (OSError, ValueError) as exc:
        stem = call_file.name[: -len(".json")]
        stored = fallback.get(f"calls/{stem}.timeline.json")
        if stored is None:
            raise
        return stored, f"unreadable ({exc}); used its line of results.jsonl"


def rebuild(run_dir: Path | str) -> RebuildResult:
    """Recompute every call of the run folder `run_dir` and rewrite its files (see the module doc).

    Raises FileNotFoundError when `run_dir` has no `calls/` folder. A folder without any call record
    is left untouched (with a warning).
    """
    run_dir = Path(run_dir)
    if not (run_dir / "calls").is_dir():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no calls/ in it)")
    call_files = _call_files(run_dir)
    if not call_files:
        return RebuildResult([], [f"{run_dir}: no call records in calls/; nothing rebuilt"])
    fallback = _stored_results(run_dir)
    records: list[dict[str, Any]] = []
    warnings: list[str] = []
    first_wall_ns: int | None = None
    for call_file in call_files:
        rel = call_file.relative_to(run_dir).as_posix()
        try:
            record, warning = _read_record(call_file, fallback)
        except (OSError, ValueError) as exc:
            warnings.append(f"{rel}: unreadable call record and not in results.jsonl; left out ({exc})")
            continue
        if warning:
            warnings.append(f"{rel}: {warning}")
        timeline_path = _timeline_path(run_dir, call_file, record)
        try:
            timeline = load_timeline(timeline_path)
            rebuilt = recompute_record(record, timeline)
        except FileNotFoundError:
            warnings.append(f"{rel}: its timeline {timeline_path.name} is missing; kept the stored figures")
            rebuilt, timeline = record, None
        except Exception as exc:  # a corrupt timeline: any error reading or replaying it
            warnings.append(
                f"{rel}: its timeline {timeline_path.name} is unreadable ({type(exc).__name__}: {exc});"
                " kept the stored figures"
            )
            rebuilt, timeline = record, None
        if timeline is not None and (first_wall_ns is None or timeline.wall_epoch_ns < first_wall_ns):
            first_wall_ns = timeline.wall_epoch_ns
        write_text(call_file, json.dumps(rebuilt, indent=2))
        records.append(rebuilt)

    write_text(run_dir / "results.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    write_text(run_dir / "calls.csv", calls_csv(records))
    write_text(run_dir / "stats.csv", stats_csv(records))
    stamp = dt.datetime.fromtimestamp(first_wall_ns / 1e9).replace(microsecond=0) if first_wall_ns else None
    write_text(
        run_dir / "junit.xml", junit_xml(records, suite_name=f"uvbench run {run_dir.name}", timestamp=stamp)
    )
    return RebuildResult(records, warnings)
