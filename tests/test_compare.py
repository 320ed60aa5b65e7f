"""Baseline comparison: the statistics on synthetic records, the CLI's exit codes, and real runs
against the local server with and without 300 ms of added agent latency."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from uvbench.cli import main as cli
from uvbench.metrics.aggregate import aggregate, percentile
from uvbench.report.compare import (
    IMPROVED,
    INSUFFICIENT,
    MIN_SAMPLE,
    NO_CHANGE,
    NOT_ENOUGH_DATA,
    OVERALL,
    REGRESSED,
    Settings,
    bootstrap_percentiles,
    compare,
)

# -- synthetic runs shaped like the local server's: lognormal agent latency (median 350 ms,
# sigma 0.25, as `uvbench.server.config.Latency`) after ~370 ms of endpointing for a turn.


def call_record(
    rng: np.random.Generator,
    *,
    shift: float = 0.0,
    turns: int = 1,
    scenario: str = "booking",
    outcome: str = "completed",
) -> dict[str, Any]:
    def latency() -> float:
        return float(rng.lognormal(0, 0.25) * 350 + shift)

    turn_list = []
    for i in range(turns):
        ttfa = 370 + latency() + float(rng.normal(0, 5))
        turn_list.append(
            {
                "index": i,
                "missed": False,
                "metrics": {
                    "turn.ttfa_ms": ttfa,
                    "turn.ttfb_ms": ttfa - 8,
                    "turn.agent_audio_ms": 900.0,
                    "turn.underflow_count": 0,
                },
            }
        )
    return {
        "scenario": scenario,
        "outcome": outcome,
        "passed": outcome == "completed",
        "metrics": {"call.first_audio_ms": latency(), "call.underflow_count": 0, "call.outcome": outcome},
        "turns": turn_list,
        "barge_ins": [],
        "expectations": [],
    }


def run_records(seed: int, calls: int, *, shift: float = 0.0, **kwargs: Any) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    return [call_record(rng, shift=shift, **kwargs) for _ in range(calls)]


def row(comparison, metric: str, stat: str = "p50", scope: str = OVERALL):
    (found,) = [
        r
        for s in comparison.scopes
        if s.name == scope
        for r in s.rows
        if (r.metric, r.stat) == (metric, stat)
    ]
    return found


def test_same_configuration_says_no_change_across_many_seeds() -> None:
    """The false-positive rate: 60 pairs of runs drawn from one distribution, all "no change"."""
    verdicts = [
        compare(run_records(2 * k, calls), run_records(2 * k + 1, calls)).verdict
        for calls in (12, 24, 40)
        for k in range(20)
    ]
    assert verdicts == [NO_CHANGE] * 60


def test_300_ms_slower_regresses_and_300_ms_faster_improves() -> None:
    base = run_records(1, 24)
    slower = compare(base, run_records(2, 24, shift=300))
    assert slower.verdict == REGRESSED
    for metric in ("turn.ttfa_ms", "turn.ttfb_ms", "call.first_audio_ms"):
        r = row(slower, metric)
        assert r.verdict == REGRESSED
        assert 200 < r.diff < 400 and r.ci[0] > r.min_effect  # the whole interval beyond the minimum
    assert "compare: regressed: turn.ttfa_ms p50 +" in slower.summary_line()
    faster = compare(run_records(3, 24, shift=300), run_records(4, 24))
    assert faster.verdict == IMPROVED
    assert row(faster, "turn.ttfa_ms").verdict == IMPROVED and row(faster, "turn.ttfa_ms").ci[1] < 0
    assert faster.summary_line().startswith("compare: improved: ")


def test_tiny_samples_are_not_enough_data_row_by_row_and_overall() -> None:
    comparison = compare(run_records(1, 5), run_records(2, 5, shift=1000))
    rows = comparison.rows()
    assert INSUFFICIENT == NOT_ENOUGH_DATA == "not enough data"
    assert rows and all(r.verdict == NOT_ENOUGH_DATA for _, r in rows)
    assert "baseline: 5 calls measure it, 10 needed" in row(comparison, "turn.ttfa_ms").note
    assert comparison.verdict == NOT_ENOUGH_DATA  # a 1 s shift, but five calls cannot tell
    assert comparison.summary_line() == (
        f"compare: not enough data (none of {len(rows)} figures could be judged, e.g. turn.ttfa_ms p50: "
        "baseline: 5 calls measure it, 10 needed; run more calls)"
    )
    doc = comparison.to_json()
    assert doc["verdict"] == "not enough data" and len(doc["not_enough_data"]) == len(rows)
    # "Too few" is one constant: one call fewer than it on one side, and nothing is judged.
    assert compare(run_records(1, MIN_SAMPLE), run_records(2, MIN_SAMPLE)).verdict == NO_CHANGE
    assert compare(run_records(1, MIN_SAMPLE), run_records(2, MIN_SAMPLE - 1)).verdict == NOT_ENOUGH_DATA
    # Runs that measured nothing compare can judge: not enough data either, not "no change".
    bare = [{**r, "turns": [], "metrics": {"call.outcome": "completed"}} for r in run_records(3, 30)]
    nothing = compare(bare, bare, metrics=["turn.ttfa_ms"])
    assert nothing.verdict == NOT_ENOUGH_DATA and "neither run measured" in nothing.summary_line()


def test_some_figures_judged_is_no_change_and_says_what_was_not() -> None:
    comparison = compare(run_records(1, 40), run_records(2, 40))
    assert comparison.verdict == NO_CHANGE
    short = len(comparison.not_judged)
    assert short and comparison.summary_line().endswith(f"; {short} more had not enough data)")


def test_tail_percentiles_need_values_beyond_them() -> None:
    comparison = compare(run_records(1, 40), run_records(2, 40))
    assert row(comparison, "turn.ttfa_ms", "p50").verdict == NO_CHANGE
    assert row(comparison, "turn.ttfa_ms", "p95").verdict == INSUFFICIENT  # 40 values: 100 needed
    assert "100 needed" in row(comparison, "turn.ttfa_ms", "p95").note
    many = compare(run_records(1, 60, turns=2), run_records(2, 60, turns=2))  # 120 turns a run
    assert row(many, "turn.ttfa_ms", "p95").verdict == NO_CHANGE
    assert row(many, "turn.ttfa_ms", "p99").verdict == INSUFFICIENT


def test_figures_are_the_aggregate_figures_and_the_verdict_is_repeatable() -> None:
    base, cur = run_records(5, 30), run_records(6, 30, shift=40)
    a = compare(base, cur)
    b = compare(base, cur, metrics=["call.success_pct", "turn.ttfa_ms"])  # other metrics alongside
    agg = aggregate(cur)
    assert row(a, "turn.ttfa_ms").current == agg.metrics["turn.ttfa_ms"].p50
    assert row(a, "call.success_pct", "value").current == 100.0
    assert row(a, "turn.ttfa_ms").ci == row(b, "turn.ttfa_ms").ci == compare(base, cur).scopes[0].rows[0].ci
    assert row(a, "turn.ttfa_ms").ci != row(compare(base, cur, Settings(seed=1)), "turn.ttfa_ms").ci


def test_the_bootstrap_resamples_calls_and_interpolates_like_aggregate() -> None:
    """A resample with call k drawn c_k times is the pooled values of the calls repeated c_k times."""
    rng = np.random.default_rng(0)
    values = rng.normal(500, 50, size=30)
    owners = np.repeat(np.arange(10), 3)  # 10 calls of 3 turns each
    draws = np.random.default_rng(1).multinomial(10, np.full(10, 0.1), size=20)

    class Fixed:
        def multinomial(self, n, pvals, size):
            return draws[:size]

    out = bootstrap_percentiles(values, owners, 10, [50, 95, 0, 100], Fixed(), 20)
    for b in range(20):
        pooled = sorted(
            v for call, times in enumerate(draws[b]) for v in values[owners == call].tolist() * times
        )
        assert out[b].tolist() == pytest.approx([percentile(pooled, q) for q in (50, 95, 0, 100)])


def test_direction_success_down_is_a_regression_and_invalid_calls_are_left_out() -> None:
    base = run_records(7, 30)
    cur = run_records(8, 30)
    for r in cur[:10]:
        r["outcome"] = r["metrics"]["call.outcome"] = "failed:missed_turn"
    invalid = run_records(9, 10, shift=5000, outcome="invalid:generator_overloaded")
    comparison = compare(base, cur + invalid)
    success = row(comparison, "call.success_pct", "value")
    assert success.verdict == REGRESSED and success.diff == pytest.approx(-100 / 3)
    assert row(comparison, "turn.ttfa_ms").verdict == NO_CHANGE  # the slow invalid calls do not count
    assert any("10 invalid calls of the current run left out" in n for n in comparison.notes)
    assert comparison.verdict == REGRESSED


def test_false_barge_ins_at_one_noise_level_regress_that_level() -> None:
    """A sweep's levels are its matrix variants: compare judges each like any scenario."""
    quiet, loud = "room[caller.noise.snr_db=30]", "room[caller.noise.snr_db=0]"

    def sweep(seed: int, loud_false_barge_ins: list[int]) -> list[dict[str, Any]]:
        records = run_records(seed, 30, scenario=quiet) + run_records(seed + 1, 30, scenario=loud)
        counts = [0] * 30 + loud_false_barge_ins
        for r, count in zip(records, counts, strict=True):
            r["metrics"]["call.false_barge_in_count"] = count
        return records

    comparison = compare(sweep(20, [0] * 27 + [1] * 3), sweep(22, [0] * 12 + [2] * 18))
    assert row(comparison, "call.false_barge_in_pct", "value", scope=quiet).verdict == NO_CHANGE
    worse = row(comparison, "call.false_barge_in_pct", "value", scope=loud)
    assert worse.verdict == REGRESSED and worse.diff == pytest.approx(50.0)  # 10 % -> 60 % of calls
    assert comparison.verdict == REGRESSED
    by_count = compare(
        sweep(20, [0] * 30), sweep(22, [0] * 3 + [2] * 27), metrics=["call.false_barge_in_count"]
    )
    assert row(by_count, "call.false_barge_in_count", scope=loud).verdict == REGRESSED  # p50: 0 -> 2


def test_per_scenario_rows_catch_a_regression_in_one_scenario() -> None:
    base = run_records(10, 30, scenario="a") + run_records(11, 30, scenario="b")
    cur = run_records(12, 30, scenario="a") + run_records(13, 30, scenario="b", shift=400)
    comparison = compare(base, cur)
    assert [s.name for s in comparison.scopes] == [OVERALL, "a", "b"]
    assert row(comparison, "turn.ttfa_ms", scope="a").verdict == NO_CHANGE
    assert row(comparison, "turn.ttfa_ms", scope="b").verdict == REGRESSED
    assert comparison.verdict == REGRESSED and "[b] turn.ttfa_ms p50" in comparison.summary_line()


def test_the_practical_minimum_holds_back_a_small_real_shift() -> None:
    base, cur = run_records(20, 300, turns=2), run_records(21, 300, turns=2, shift=40)
    default = row(compare(base, cur), "turn.ttfa_ms")
    assert default.ci[0] > 0 and default.verdict == NO_CHANGE  # real, but under 10 % of ~720 ms
    strict = row(compare(base, cur, Settings(min_effect=0.02)), "turn.ttfa_ms")
    assert strict.verdict == REGRESSED


# -- the command line on synthetic run folders


def write_run(folder: Path, records: list[dict[str, Any]]) -> Path:
    (folder / "calls").mkdir(parents=True)
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def test_cli_exit_codes_table_and_json(tmp_path, capsys) -> None:
    base = write_run(tmp_path / "base", run_records(1, 24))
    same = write_run(tmp_path / "same", run_records(2, 24))
    slow = write_run(tmp_path / "slow", run_records(3, 24, shift=300))
    fast = write_run(tmp_path / "fast", run_records(4, 24, shift=-200))

    assert cli(["compare", str(base), str(same)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("compare: no change")
    assert any(line.split()[:2] == ["turn.ttfa_ms", "p50"] and "95% CI" not in line for line in out)
    assert any("95% CI" in line and "verdict" in line for line in out)

    assert cli(["compare", str(base), str(slow)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("compare: regressed: ") and "improved" not in out[-1]
    assert cli(["compare", str(base), str(fast)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("compare: improved: ")

    assert cli(["compare", str(base), str(slow), "--json", "--metric", "turn.ttfa_ms"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["verdict"] == "regressed" and doc["regressed"][0] == {
        "scope": "overall",
        "metric": "turn.ttfa_ms",
        "stat": "p50",
    }
    assert {r["metric"] for r in doc["scopes"][0]["rows"]} == {"turn.ttfa_ms"}
    assert cli(["compare", str(base), str(slow), "--min-effect", "90%"]) == 0  # nothing moves 90 %
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("compare: no change")


def test_cli_not_enough_data_exits_4_and_the_help_says_so(tmp_path, capsys) -> None:
    from uvbench.cli.compare import EXIT_CODES, EXIT_NOT_ENOUGH_DATA

    base = write_run(tmp_path / "base", run_records(1, 5))
    slow = write_run(tmp_path / "slow", run_records(2, 5, shift=1000))
    assert EXIT_NOT_ENOUGH_DATA == 4
    assert cli(["compare", str(base), str(slow)]) == 4
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("compare: not enough data (none of ")
    assert any(line.split()[:2] == ["turn.ttfa_ms", "p50"] and "not enough data (baseline: 5 calls" in line
               for line in out)  # fmt: skip
    assert cli(["compare", str(base), str(slow), "--json"]) == 4
    assert json.loads(capsys.readouterr().out)["verdict"] == "not enough data"
    # Enough calls on both sides: judged again (exit 1: the shift is real).
    more = write_run(tmp_path / "more", run_records(3, 12, shift=1000))
    assert cli(["compare", str(write_run(tmp_path / "base12", run_records(4, 12))), str(more)]) == 1
    capsys.readouterr()
    with pytest.raises(SystemExit):
        cli(["compare", "--help"])
    help_text = capsys.readouterr().out
    assert "  4  not enough data: no figure could be judged" in help_text
    assert f"at least {MIN_SAMPLE} calls" in EXIT_CODES.replace("\n", " ")


def test_a_baseline_with_not_enough_data_is_a_skipped_testcase(tmp_path) -> None:
    from junitparser import JUnitXml

    from uvbench.cli.compare import baseline_check
    from uvbench.report.junit import junit_xml

    current = run_records(2, 5)
    folder = write_run(tmp_path / "current", current)
    (folder / "junit.xml").write_text(junit_xml(current))
    comparison, lines = baseline_check(tmp_path / "base", run_records(1, 5), folder, current)
    assert comparison.verdict == NOT_ENOUGH_DATA and lines[-1].startswith("compare: not enough data")
    assert json.loads((folder / "compare.json").read_text())["verdict"] == "not enough data"
    (case,) = list({s.name: s for s in JUnitXml.fromfile(str(folder / "junit.xml"))}["baseline"])
    (skipped,) = case.result
    assert type(skipped).__name__ == "Skipped" and skipped.message.startswith("compare: not enough data")


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys) -> None:
    base = write_run(tmp_path / "base", run_records(1, 12))
    (tmp_path / "empty").mkdir()
    assert cli(["compare", str(base), str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"uvbench: error: {tmp_path / 'empty'}: not a run folder (no results.jsonl in it); pass "
                   "reports/<time>-<name>/"]  # fmt: skip
    assert cli(["compare", str(tmp_path / "nowhere"), str(base)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert cli(["compare", str(base), str(base), "--metric", "turn.nope_ms"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a metric compare knows" in err[0]


# -- real calls: the local server told to add 300 ms of response latency

SCENARIO = """\
    name: latency
    client: {record: false}
    call:
      experimentalSettings:
        uvbench:
          agent:
            greeting: Hi.
            replies: [Okay.]
            latency: {kind: lognormal, ms: %d, sigma: 0.25}
    script:
      - wait_for: agent_done
      - say: yes_16k.wav
      - wait_for: agent_done
      - hang_up
"""
CALLS, VUS = 24, 8


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory) -> dict[str, Path]:
    """Three runs of 24 calls: two of the same configuration (median latency 350 ms) and, through
    `uvbench run --baseline`, one with the median latency 300 ms higher."""
    from uvbench.runner.load import LoadProfile
    from uvbench.runner.run import run_scenarios
    from uvbench.scenario import load_scenarios

    root = tmp_path_factory.mktemp("compare")
    out = root / "reports"
    runs: dict[str, Path] = {}
    for label, ms in (("base", 350), ("same", 350), ("slow", 650)):
        path = root / f"{label}.yaml"
        path.write_text(textwrap.dedent(SCENARIO % ms))
        if label == "slow":
            before = {p for p in out.iterdir() if p.is_dir()}
            code = cli(["run", str(path), "--out", str(out), "--vus", str(VUS), "--iterations", str(CALLS),
                        "-q", "--baseline", str(runs["base"])])  # fmt: skip
            (runs[label],) = {p for p in out.iterdir() if p.is_dir()} - before
            runs["slow_exit"] = code  # type: ignore[assignment]
        else:
            summary = run_scenarios(
                load_scenarios(path), out, label, profile=LoadProfile(concurrency=VUS, iterations=CALLS)
            )
            runs[label] = summary.folder
    return runs


def test_real_runs_same_configuration_no_change_and_300_ms_regressed(real_runs, capsys) -> None:
    capsys.readouterr()
    assert cli(["compare", str(real_runs["base"]), str(real_runs["same"])]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("compare: no change"), "\n".join(out)

    assert cli(["compare", str(real_runs["base"]), str(real_runs["slow"])]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("compare: regressed: "), "\n".join(out)
    # The agent answers 300 ms later: its greeting and its turns. On a busy machine the generator may
    # set apart enough turns that their figures cannot be judged; the greeting's still can.
    assert "turn.ttfa_ms p50 +" in out[-1] or "call.first_audio_ms p50 +" in out[-1], out[-1]


def test_run_with_baseline_exits_1_and_writes_compare_json_and_junit(real_runs) -> None:
    from junitparser import JUnitXml

    assert real_runs["slow_exit"] == 1
    folder = real_runs["slow"]
    doc = json.loads((folder / "compare.json").read_text())
    assert doc["verdict"] == "regressed" and doc["baseline"] == str(real_runs["base"])
    metrics = ("turn.ttfa_ms", "call.first_audio_ms")
    latency = [{"scope": "overall", "metric": m, "stat": "p50"} for m in metrics]
    found = [r for r in latency if r in doc["regressed"]]
    assert found, doc["regressed"]  # (as above: the turns' or, on a busy machine, the greeting's)
    suites = {suite.name: suite for suite in JUnitXml.fromfile(str(folder / "junit.xml"))}
    baseline = suites["baseline"]
    assert baseline.tests == 1 and baseline.failures == 1
    (case,) = list(baseline)
    assert case.name == "baseline comparison" and f"{found[0]['metric']} p50" in case.result[0].message


def test_figures_and_differences_print_in_their_unit() -> None:
    from uvbench.report.compare import format_value

    assert [format_value(812.4, u) for u in ("ms", "%", "/min", "count", "")] == [
        "812 ms",
        "812.4%",
        "812.40/min",
        "812.4",
        "812.40",
    ]
    assert [format_value(-1.25, u, signed=True) for u in ("ms", "%", "/min", "count", "")] == [
        "-1 ms",
        "-1.2 pp",
        "-1.25/min",
        "-1.2",
        "-1.25",
    ]
    assert (
        format_value(3.0, "ms", signed=True) == "+3 ms" and format_value(0.5, "%", signed=True) == "+0.5 pp"
    )
    assert format_value(None, "ms") == "—" and format_value(None, "%", signed=True) == "—"


def test_a_results_file_cut_mid_character_or_holding_binary_junk_is_read_around_it(tmp_path, capsys):
    """A run killed mid-write can leave a line cut inside a UTF-8 character, and a disk can hold
    junk: those lines are skipped with a warning, the records around them read."""
    from uvbench.cli.compare import load_run

    record = {"call_id": "a", "scenario": "s", "outcome": "completed", "passed": True, "metrics": {}}
    (tmp_path / "results.jsonl").write_bytes(
        json.dumps(record).encode() + b"\n" + b'{"call_id": "caf\xc3' + b"\n\x00\xff\xfe junk\n"
    )
    assert load_run(tmp_path) == [record]
    assert "2 lines are not call records; skipped" in capsys.readouterr().err
