"""The end-of-run summary in the terminal, as k6 prints its end-of-test summary: checks and the
failing ones, the headline figures in k6's columns (per turn when turns are named or several), the
rates with their counts, underflows over the agent audio heard, calls per second, the duration."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from uvbench.metrics.aggregate import aggregate
from uvbench.metrics.thresholds import evaluate, parse_thresholds
from uvbench.report.finish import SHOWN_FAILING_CHECKS, end_summary, finish_run

ROOT = Path(__file__).resolve().parent.parent
DOTTED = re.compile(r"^ {2,}\S[^:]*\.{2,}: ")
"""A k6-style line: its name padded with dots, then `: `."""


def _call(
    n: int,
    *,
    outcome: str = "completed",
    scenario: str = "booking",
    named: bool = True,
    audio_ms: float = 30_000.0,
    underflows: int = 0,
    expectations: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A call record as results.jsonl holds it: two turns (steps 1 and 3, the first named
    `ask_order` when `named`), a barge-in at step 5 named `interrupt`, two expectations at step 7."""
    if expectations is None:
        expectations = [
            {
                "step": 7,
                "name": "order_checks",
                "ok": outcome == "completed",
                "what": "agent transcript contains 'order'",
                "detail": "heard: Hi. | Okay.",
            },
            {
                "step": 7,
                "name": "order_checks",
                "ok": True,
                "what": "interrupt.clear_ms <= 400",
                "detail": "80",
            },
        ]
    return {
        "scenario": scenario,
        "variant": {},
        "call_id": f"call-{n}",
        "passed": outcome == "completed",
        "outcome": outcome,
        "outcome_detail": None if outcome == "completed" else "step 7 (order_checks): ...",
        "duration_ms": 20_000.0,
        "end_reason": "hangup",
        "tags": {"start_offset_s": 2.0 * n, "vu": n % 2, "iteration": n},
        "anchors": {},
        "metrics": {
            "call.create_ms": 40.0,
            "call.join_ms": 10.0,
            "call.first_audio_ms": 300.0 + n,
            "call.duration_ms": 20_000.0,
            "call.underflow_count": underflows,
            "call.agent_audio_ms": audio_ms,
        },
        "turns": [
            {
                "index": 0,
                "step": 1,
                "name": "ask_order" if named else None,
                "missed": False,
                "metrics": {"turn.ttfa_ms": 500.0 + 20 * n, "turn.ttfb_ms": 490.0 + 20 * n},
            },
            {
                "index": 1,
                "step": 3,
                "name": None,
                "missed": False,
                "metrics": {"turn.ttfa_ms": 1000.0 + 20 * n, "turn.ttfb_ms": 990.0 + 20 * n},
            },
        ],
        "barge_ins": [
            {
                "index": 0,
                "step": 5,
                "name": "interrupt",
                "success": True,
                "metrics": {"interrupt.clear_ms": 80.0, "interrupt.silence_ms": 95.0},
            }
        ],
        "expectations": expectations,
        "transcripts": [],
        "artifacts": {},
    }


def _run(**kwargs: Any) -> list[dict[str, Any]]:
    """Ten calls, the fourth failing its first expectation; the first with 2 underflows."""
    return [
        _call(n, outcome="failed:expect" if n == 3 else "completed", underflows=2 if n == 0 else 0, **kwargs)
        for n in range(10)
    ]


def _line(lines: list[str], name: str) -> str:
    (line,) = [line for line in lines if line.startswith(f"  {name}.")]
    return line


def _values(line: str) -> list[str]:
    return line.split(": ", 1)[1].split()


def test_a_one_scenario_run_reads_as_k6_end_of_test_summary() -> None:
    records = _run()
    lines = end_summary(aggregate(records, by="scenario"), records, summary={"run": {"duration_s": 60.0}})
    assert len(lines) <= 20
    assert _values(_line(lines, "checks")) == ["95.00%", "✓", "19", "✗", "1"]
    # The failing check under it: its label, what, fails/total and one failed call's detail.
    failing = [line for line in lines if line.startswith("    ✗")]
    assert failing == [
        "    ✗ order_checks: agent transcript contains 'order': 1/10 failed; call call-3: heard: Hi. | Okay."
    ]
    header = next(line for line in lines if "count" in line)
    assert header.split() == ["count", "avg", "min", "med", "p(90)", "p(95)", "max", "(ms)"]
    # 20 turns: 500..680 and 1000..1180 ms by 20; percentiles interpolated between closest ranks.
    assert _values(_line(lines, "turn.ttfa_ms")) == ["20", "840", "500", "840", "1142", "1161", "1180"]
    at = lines.index(_line(lines, "turn.ttfa_ms"))
    assert lines[at + 1].startswith("    {turn:ask_order}.") and lines[at + 2].startswith("    {turn:step3}.")
    assert _values(lines[at + 1]) == ["10", "590", "500", "590", "662", "671", "680"]
    assert _values(lines[at + 2]) == ["10", "1090", "1000", "1090", "1162", "1171", "1180"]
    assert _values(_line(lines, "interrupt.clear_ms"))[:2] == ["10", "80"]
    assert _values(_line(lines, "call.first_audio_ms")) == ["10", "304", "300", "304", "308", "309", "309"]
    assert _values(_line(lines, "call.success")) == ["90.00%", "✓", "9", "✗", "1"]
    assert _values(_line(lines, "interrupt.success")) == ["100.00%", "✓", "10", "✗", "0"]
    assert _line(lines, "turn.miss").endswith(": 0.00% 0 out of 20 turns")
    assert _line(lines, "underflows").endswith(": 2 in 5.0 min of agent audio heard (0.40/min)")
    assert _values(_line(lines, "calls")) == ["10", "0.17/s"]  # over the run's 60 s
    assert _values(_line(lines, "duration")) == ["1m00.0s"]
    # Aligned: every k6-style line has its ": " in the same column; no colour codes.
    dotted = [line for line in lines if DOTTED.match(line)]
    assert len(dotted) >= 12 and len({line.index(": ") for line in dotted}) == 1
    assert header.index("count") + len("count") == dotted[0].index(": ") + 2 + 5  # over the count column
    assert not any("\x1b" in line for line in lines)


def test_per_turn_lines_only_when_a_scenario_names_its_turns_or_has_several() -> None:
    def labels(records: list[dict[str, Any]]) -> list[str]:
        lines = end_summary(aggregate(records, by="scenario"), records)
        return [line.split(".")[0].strip() for line in lines if line.startswith("    {turn:")]

    one_unnamed = [{**r, "turns": r["turns"][1:]} for r in _run()]
    assert labels(one_unnamed) == []
    # Two scenarios of one unnamed turn each, at different steps: still nothing to break down.
    other = [{**r, "scenario": "support", "turns": r["turns"][:1]} for r in _run(named=False)]
    assert labels(one_unnamed + other) == []
    assert labels(_run(named=False)) == ["{turn:step1}", "{turn:step3}"]  # several turns
    one_named = [{**r, "turns": r["turns"][:1]} for r in _run()]
    assert labels(one_named) == ["{turn:ask_order}"]


def test_no_underflow_rate_from_a_few_seconds_of_audio() -> None:
    records = _run(audio_ms=900.0)  # 9 s heard in all
    line = _line(end_summary(aggregate(records), records), "underflows")
    assert line.endswith(": 2 in 9.0 s of agent audio heard (under 10 s: no per-minute figure)")
    assert "/min" not in line
    # A run folder from before the audio heard was measured: the underflows, no rate.
    old = [
        {**r, "metrics": {k: v for k, v in r["metrics"].items() if k != "call.agent_audio_ms"}}
        for r in records
    ]
    line = _line(end_summary(aggregate(old), old), "underflows")
    assert line.endswith(": 2 (agent audio heard not measured: no per-minute figure)")


def test_at_most_ten_failing_checks_then_how_many_more() -> None:
    many = [
        {"step": step, "name": None, "ok": False, "what": f"check {step}", "detail": "no"}
        for step in range(12)
    ]
    records = [_call(n, outcome="failed:expect", expectations=many) for n in range(3)]
    lines = end_summary(aggregate(records), records)
    failing = [line for line in lines if line.startswith("    ✗")]
    assert len(failing) == SHOWN_FAILING_CHECKS
    assert failing[0] == "    ✗ step0: check 0: 3/3 failed; call call-0: no"
    assert lines[lines.index(failing[-1]) + 1] == "    … 2 more in report.html"


def test_failing_checks_name_their_scenario_when_there_are_several() -> None:
    records = _run() + [_call(20, scenario="support")]
    failing = [line for line in end_summary(aggregate(records), records) if line.startswith("    ✗")]
    assert failing[0].startswith("    ✗ booking order_checks: agent transcript contains 'order': 1/10 failed")


def test_the_duration_of_a_run_folder_without_its_run_object() -> None:
    records = _run()  # the last call starts 18 s in and lasts 20 s
    lines = end_summary(aggregate(records), records, summary={})
    assert _values(_line(lines, "duration")) == ["38.0s"]
    assert _values(_line(lines, "calls")) == ["10", "0.26/s"]
    records[5] = {**records[5], "outcome": "invalid:generator_overloaded", "passed": False}
    calls = _line(end_summary(aggregate(records), records, summary={}), "calls")
    assert calls.endswith("(1 invalid: not in the figures)")


def test_thresholds_come_first_as_before() -> None:
    records = _run()
    thresholds = parse_thresholds(
        {"turn.ttfa_ms{turn:ask_order}": ["p(95) < 1000"], "checks": ["rate > 0.99"]}
    )
    lines = end_summary(aggregate(records), records, evaluate(thresholds, records))
    assert lines[0] == "THRESHOLDS"
    assert lines[1].startswith("  ✓ turn.ttfa_ms{turn:ask_order} p(95) < 1000")
    assert lines[2].startswith("  ✗ checks rate > 0.99")
    assert lines[3] == "TOTAL RESULTS (valid calls)"


def test_finish_run_prints_the_summary_and_puts_the_checks_in_summary_json(tmp_path: Path) -> None:
    records = _run()
    (tmp_path / "summary.json").write_text(json.dumps({"run": {"duration_s": 30.0}}))
    finished = finish_run(tmp_path, records, [])
    assert _values(_line(finished.lines, "checks")) == ["95.00%", "✓", "19", "✗", "1"]
    assert _values(_line(finished.lines, "calls")) == ["10", "0.33/s"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["run"] == {"duration_s": 30.0}  # kept
    checks = summary["checks"]
    assert (checks["passes"], checks["fails"], checks["rate"]) == (19, 1, 0.95)
    assert [(c["label"], c["what"], c["passes"], c["fails"]) for c in checks["checks"]] == [
        ("order_checks", "agent transcript contains 'order'", 9, 1),
        ("order_checks", "interrupt.clear_ms <= 400", 10, 0),
    ]
    assert checks["checks"][0]["failures"] == [{"call_id": "call-3", "detail": "heard: Hi. | Okay."}]


SCENARIO = """\
name: checked
call:
  experimentalSettings: {uvbench: {agent: {greeting: "Hi.", replies: ["Okay."]}}}
client: {record: none, ping_interval: 0}
script:
  - wait_for: agent_done
  - say: hello_16k.wav
    name: hello
  - wait_for: agent_done
  - name: heard
    expect:
      - {transcript_contains: "Okay", role: agent}
      - {transcript_contains: "zebra", role: agent}
  - hang_up
"""


def test_a_real_run_ends_with_its_checks_and_calls_per_second(tmp_path: Path) -> None:
    scenario = tmp_path / "checked.yaml"
    scenario.write_text(SCENARIO)
    argv = ["run", str(scenario), "--vus", "2", "--iterations", "2", "--out", str(tmp_path / "out")]
    result = subprocess.run(
        [sys.executable, "-m", "uvbench", *argv], capture_output=True, text=True, timeout=170, cwd=ROOT
    )
    assert result.returncode == 1, result.stderr  # every call failed its "zebra" expectation
    lines = result.stdout.splitlines()
    (folder,) = [p for p in (tmp_path / "out").iterdir() if p.is_dir()]
    records = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    # "Okay" is heard unless a busy machine made a call miss its turn: the counts are the records'.
    passes = sum(e["ok"] for r in records for e in r["expectations"])
    fails = sum(not e["ok"] for r in records for e in r["expectations"])
    assert fails >= 2 and passes + fails == 4
    assert _values(_line(lines, "checks")) == [f"{passes / 4:.2%}", "✓", str(passes), "✗", str(fails)]
    assert any(
        line.startswith("    ✗ heard: agent transcript contains 'zebra': 2/2 failed; call ") for line in lines
    )
    assert re.fullmatch(r"2 \d+\.\d\d/s", " ".join(_values(_line(lines, "calls"))))
    assert re.fullmatch(r"\d+\.\ds", _values(_line(lines, "duration"))[0])
    assert "\x1b" not in result.stdout  # not a terminal: no colour codes
    summary = json.loads((folder / "summary.json").read_text())
    assert (summary["checks"]["passes"], summary["checks"]["fails"]) == (passes, fails)
