"""Suite files: weighted picks over a shared load, entries with their own load in parallel from
their startTime, thresholds from the file gating the exit code; each mistake one file:line:col line."""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import re
import textwrap
from pathlib import Path

import jsonschema
import pytest
import yaml

from uvbench.cli import main
from uvbench.runner.fanout import START_GAP_S, LoadGroup, RunState, run_groups, weighted_order
from uvbench.runner.load import LoadProfile
from uvbench.scenario import ScenarioError, load_scenarios, parse_scenarios
from uvbench.scenario.load_config import CliLoad, LoadConfigError
from uvbench.scenario.loader import MAX_FILE_BYTES, MAX_SCENARIOS, is_suite_file
from uvbench.scenario.plan import plan_run
from uvbench.scenario.suite import load_suite, suite_json_schema

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"


def scenarios(*names: str):
    return [parse_scenarios(f"name: {n}\nscript: [hang_up]\n")[0] for n in names]


# ------------------------------------------------------------------------------------------------
# Weighted picks (pure)


def test_seeded_picks_follow_the_weights_and_repeat_with_the_seed():
    a, b, c = scenarios("a", "b", "c")
    pools = [([a], 3.0), ([b], 1.0), ([c], 0.5)]
    picks = [s.name for s, _ in itertools.islice(weighted_order(pools, seed=7), 1000)]
    shares = collections.Counter(picks)
    for name, weight in (("a", 3), ("b", 1), ("c", 0.5)):
        assert abs(shares[name] / 1000 - weight / 4.5) < 0.05, shares
    again = [s.name for s, _ in itertools.islice(weighted_order(pools, seed=7), 1000)]
    other = [s.name for s, _ in itertools.islice(weighted_order(pools, seed=8), 1000)]
    assert again == picks and other != picks


def test_unseeded_picks_are_an_exact_smooth_round_robin_and_matrix_variants_take_turns():
    a, b = scenarios("a", "b")
    v1, v2 = scenarios("m1", "m2")  # one entry's two matrix variants
    order = weighted_order([([a], 3), ([v1, v2], 1)], seed=None)
    picks = [(s.name, attempt) for s, attempt in itertools.islice(order, 8)]
    assert picks == [("a", 1), ("a", 2), ("m1", 1), ("a", 3), ("a", 4), ("a", 5), ("m2", 1), ("a", 6)]
    shares = collections.Counter(
        s.name for s, _ in itertools.islice(weighted_order([([a], 2), ([b], 1)], seed=None), 1000)
    )
    assert abs(shares["a"] - 667) <= 1 and abs(shares["b"] - 333) <= 1
    with pytest.raises(ValueError):
        next(weighted_order([([a], 0)], seed=None))


async def test_groups_run_in_parallel_from_their_start_offsets_on_one_state():
    a, b, c = scenarios("a", "b", "c")
    seen: list[tuple[str, float, dict]] = []

    async def run_one(scenario, tags):
        seen.append((scenario.name, tags["start_offset_s"], tags))
        await asyncio.sleep(0.3)
        return {"outcome": "completed"}

    state = RunState()
    groups = [
        LoadGroup("shared", LoadProfile(concurrency=2, iterations=4), (((a,), 1.0), ((b,), 1.0))),
        LoadGroup("late", LoadProfile(concurrency=1, iterations=2), (((c,), 1.0),), start_s=0.1),
    ]
    await run_groups(groups, run_one, state=state)
    assert collections.Counter(name for name, _, _ in seen) == {"a": 2, "b": 2, "c": 2}
    # Each group counts only its own calls against its profile, though both fill one RunState: the
    # late group starts at its offset while the shared one has 2 calls in flight, and the shared
    # group refills both its VUs at 0.3 s while the late group's call still runs.
    late = sorted(offset for name, offset, _ in seen if name == "c")
    assert 0.1 <= late[0] < 0.25 and late[1] >= late[0] + 0.3  # its one VU: one call after the other
    early = sorted(offset for name, offset, _ in seen if name != "c")
    # (calls starting together go START_GAP_S apart: their offsets are their real starts)
    # (and a busy machine may start the first a few ms late)
    assert 0.0 <= early[0] < 0.05 and early[0] + START_GAP_S <= early[1] < 0.1
    assert early[0] + 0.3 <= early[2] <= early[3] < 0.5
    assert state.started == state.finished == 6 and state.in_flight == 0


# ------------------------------------------------------------------------------------------------
# Loading suites


SHORT = """\
name: {name}
client: {{record: false, ping_interval: 0}}
call:
  experimentalSettings: {{uvbench: {{agent: {{greeting: "Hi.", replies: ["Okay."]}}}}}}
thresholds: {{turn.ttfa_ms: ["p(95) < 60000"]}}
script:
  - wait_for: agent_done        # the greeting
    timeout: 15s
  - say: hello_16k.wav
  - wait_for: agent_done
  - hang_up
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def files(tmp_path):
    write(tmp_path, "a.yaml", SHORT.format(name="a"))
    write(tmp_path, "b.yaml", SHORT.format(name="b"))
    return tmp_path


def test_a_suite_names_its_files_and_gives_each_entry_its_load(files):
    path = write(
        files,
        "suite.yaml",
        """\
        name: mix
        vus: 2
        iterations: 6
        thresholds: {"turn.ttfa_ms{scenario:alpha}": ["p(95) < 900"]}
        scenarios:
          alpha: {file: a.yaml, weight: 2, tags: {kind: smoke, tier: 1}}
          beta: {file: b.yaml}
          spike: {file: a.yaml, startTime: 1m30s, load: {executor: constant-vus, vus: 3, duration: 10s}}
        """,
    )
    assert is_suite_file(path) and not is_suite_file(files / "a.yaml")
    suite = load_suite(path)
    assert [e.name for e in suite.entries] == ["alpha", "beta", "spike"]
    assert [s.name for e in suite.entries for s in e.scenarios] == ["alpha", "beta", "spike"]
    assert suite.notes[0].startswith("suite entry alpha: ") and "thresholds: not used" in suite.notes[0]
    plan = plan_run(path, CliLoad())
    assert (
        plan.suite
        and plan.name == "mix"
        and [t.key for t in plan.thresholds] == ["turn.ttfa_ms{scenario:alpha}"]
    )
    assert plan.scenario_tags == {"alpha": {"kind": "smoke", "tier": 1}}
    shared, spike = plan.load_json
    assert shared == {
        "scenarios": {"alpha": 2.0, "beta": 1.0}, "startTime": "0ms", "executor": "shared-iterations",
        "vus": 2, "iterations": 6, "maxDuration": None, "gracefulStop": None,
    }  # fmt: skip
    assert spike == {
        "scenarios": {"spike": 1.0}, "startTime": "1m30s", "executor": "constant-vus", "vus": 3,
        "duration": "10s", "gracefulStop": None,
    }  # fmt: skip
    assert plan.total_calls is None and plan.duration_s == 100
    groups = plan.groups
    assert [g.start_s for g in groups] == [0, 90] and [len(g.pools) for g in groups] == [2, 1]
    # CLI flags set the shared load only
    assert plan_run(path, CliLoad(duration=5)).load_json[0]["executor"] == "constant-vus"
    assert plan_run(path, CliLoad(duration=5)).load_json[1]["vus"] == 3


@pytest.mark.parametrize(
    ("suite", "expected"),
    [
        (
            "scenarios:\n  alpha: {file: aa.yaml}\n",
            r'^suite\.yaml:2:17: scenarios\.alpha\.file: no such file "aa\.yaml"'
            r' \(did you mean "a\.yaml"\?\)$',
        ),
        (
            "scenarios:\n  alpha: {file: a.yaml, wieght: 2}\n",
            r'^suite\.yaml:2:25: scenarios\.alpha\.wieght: unknown key \(did you mean "weight"\?\)$',
        ),
        (
            "scenarios:\n  alpha: {file: a.yaml, weight: 2, load: {executor: constant-vus, duration: 1s}}\n",
            r"^suite\.yaml:2:33: scenarios\.alpha\.weight: an entry with its own load runs apart",
        ),
        (
            "scenarios:\n  alpha: {file: a.yaml, startTime: 10s}\n",
            r"^suite\.yaml:2:36: scenarios\.alpha\.startTime: entries without their own load share",
        ),
        (
            "scenarios:\n  alpha: {file: a.yaml, tags: {vu: 3}}\n",
            r'^suite\.yaml:2:36: scenarios\.alpha\.tags\.vu: "vu" is set by the runner on every record',
        ),
        (
            "scenarios:\n  Alpha: {file: a.yaml}\n",
            r'^suite\.yaml:2:3: scenarios\.Alpha: "Alpha" is not valid \(expected a name matching'
            r" \[a-z0-9_-\]\+\)$",
        ),
        (
            "scenarios: {}\n",
            r"^suite\.yaml:1:1: scenarios: a mapping is not valid \(expected at least 1 item\)$",
        ),
        (
            "script: [hang_up]\nscenarios:\n  alpha: {file: a.yaml}\n",
            r"^suite\.yaml:1:1: script: unknown key \(a suite has no script: it belongs in a scenario file",
        ),
        (
            "load: {executor: constant-vus, vus: 2}\nscenarios:\n  alpha: {file: a.yaml}\n",
            r'^suite\.yaml:1:1: load: missing key "duration"',
        ),
        (
            "thresholds: {turn.ttfa_ms: ['p95 <']}\nscenarios:\n  alpha: {file: a.yaml}\n",
            r'^suite\.yaml:1:29: thresholds\["turn\.ttfa_ms"\]\[0\]: "p95 <": cannot parse',
        ),
        (
            "scenarios:\n  alpha: {file: suite.yaml}\n",
            r'^suite\.yaml:2:17: scenarios\.alpha\.file: "suite\.yaml" is a suite file'
            r" \(expected a scenario file\)$",
        ),
        (
            "scenarios:\n  alpha: {file: bad.yaml}\n",
            r"^bad\.yaml:3:6: script\[0\]\.wiat_for: unknown step kind",  # the scenario file's own problem
        ),
        (
            "scenarios:\n  alpha: {file: two.yaml}\n",
            r'^suite\.yaml:2:17: scenarios\.alpha\.file: "two\.yaml" holds 2 scenarios \(a, b\)'
            r" \(expected one scenario per entry",
        ),
    ],
)
def test_each_suite_mistake_is_one_line_at_its_place(files, suite, expected):
    write(files, "bad.yaml", "name: bad\nscript:\n  - {wiat_for: agent_done}\n")
    write(files, "two.yaml", SHORT.format(name="a") + "---\n" + SHORT.format(name="b"))
    path = write(files, "suite.yaml", suite)
    with pytest.raises(ScenarioError) as info:
        load_suite(path)
    problems = [p.removeprefix(f"{files}/") for p in info.value.problems]
    assert len(problems) == 1, problems
    assert re.search(expected, problems[0]), problems[0]


def test_the_scenarios_of_all_entries_together_are_limited(files, capsys):
    sweep = "[" + ", ".join(str(60 + i) for i in range(400)) + "]"
    write(files, "sweep.yaml", f"name: s\nscript: [hang_up]\nmatrix: {{clientBufferSizeMs: {sweep}}}\n")
    entries = "".join(f"  e{i}: {{file: sweep.yaml}}\n" for i in range(50))
    path = write(files, "suite.yaml", "scenarios:\n" + entries)
    with pytest.raises(ScenarioError) as info:
        load_suite(path)
    assert [p.removeprefix(f"{files}/") for p in info.value.problems] == [
        'suite.yaml:4:14: scenarios.e2.file: "sweep.yaml" brings the suite to 1,200 scenarios, matrix'
        f" variants counted (expected at most {MAX_SCENARIOS:,}, uvbench's limit: fewer entries or smaller"
        " matrices)"
    ]
    out = files / "out"
    assert main(["run", str(path), "--out", str(out)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1 and not out.exists()


def test_an_entry_file_written_as_a_number_is_that_file_not_dropped(files):
    write(files, "2024", SHORT.format(name="dated"))
    suite = load_suite(write(files, "suite.yaml", "scenarios:\n  a: {file: 2024}\n"))
    assert [(e.name, e.file.name) for e in suite.entries] == [("a", "2024")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "scenarios:\n  a: {file: a.yaml}\nname: x\x00\n",
            "suite.yaml:3:8: a NUL byte (U+0000) is not allowed",
        ),
        ("scenarios:\n  a: {file: a.yaml, tags: " + "[" * 300 + "]" * 300 + "}\n", "suite.yaml:2:"),
        (
            "scenarios:\n  a: {file: a.yaml}\nname: 'x\n",
            "suite.yaml:3:7: invalid YAML: the quoted value that",
        ),
        ("scenarios:\n  a: {file: a.yaml}\n" + "#" * MAX_FILE_BYTES, "suite.yaml:1:1: the file is"),
    ],
)
def test_a_hostile_suite_file_is_one_line_and_run_leaves_nothing(files, capsys, text, expected):
    path = files / "suite.yaml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as info:
        load_suite(path)
    (problem,) = info.value.problems
    assert problem.removeprefix(f"{files}/").startswith(expected), problem
    assert main(["run", str(path), "--out", str(files / "out")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [problem] and not (files / "out").exists()


def test_suite_detection_is_by_the_scenarios_key_and_clear_where_a_scenario_is_expected(files, capsys):
    suite = write(files, "suite.yaml", "scenarios:\n  alpha: {file: a.yaml}\n")
    with pytest.raises(
        ScenarioError, match=r"suite\.yaml: a suite file \(it has scenarios:\), not a scenario file"
    ):
        load_scenarios(suite)
    assert [s.name for s in load_scenarios(files)] == ["a", "b"]  # a folder skips its suites
    plan = plan_run(files)
    assert plan.notes == [f"{suite} is a suite file: skipped (run it on its own: uvbench run {suite})"]
    only = files / "only"
    only.mkdir()
    (only / "s.yaml").write_text(suite.read_text())
    assert main(["run", str(only), "--out", str(files / "out")]) == 2
    assert "only suite files in this folder (s.yaml; expected scenario files" in capsys.readouterr().err
    # a suite's entries all with their own load: load flags have nothing to set
    both = write(
        files, "apart.yaml", "scenarios:\n  x: {file: a.yaml, load: {executor: constant-vus, duration: 1s}}\n"
    )
    with pytest.raises(LoadConfigError, match="every entry has its own load"):
        plan_run(both, CliLoad(vus=2))


def test_the_example_suite_loads_and_matches_its_schema():
    path = SCENARIOS / "suite_example.yaml"
    jsonschema.validate(yaml.safe_load(path.read_text()), suite_json_schema())
    plan = plan_run(path)
    assert plan.suite and {s.source for s in plan.scenarios} == {
        str(SCENARIOS / "quickstart.yaml"),
        str(SCENARIOS / "buffer_matrix.yaml"),
    }
    shared, late = plan.load_json
    assert shared["scenarios"] == {"order-status": 1, "buffers": 2} and late["startTime"] == "10s"
    assert len(plan.thresholds) == 5 and plan.total_calls is None
    # `uvbench run scenarios/` runs the scenario files and skips the suite
    assert {s.base_name for s in plan_run(SCENARIOS).scenarios} == {
        "order-status",
        "buffer-matrix",
        "noisy-callers",
    }


def test_uvbench_schema_suite_prints_the_suite_schema(capsys):
    assert main(["schema", "--suite"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "uvbench suite" and "scenarios" in schema["required"]
    jsonschema.Draft202012Validator.check_schema(schema)


# ------------------------------------------------------------------------------------------------
# A real suite run against the local server


def test_a_suite_run_weights_entries_starts_groups_late_and_gates_on_its_thresholds(files, capsys):
    from junitparser import JUnitXml

    path = write(
        files,
        "suite.yaml",
        """\
        name: mix
        load: {executor: shared-iterations, vus: 4, iterations: 8}
        thresholds:
          turn.ttfa_ms: ["p(95) < 1"]                          # breached on purpose
          "call.duration_ms{scenario:spike}": ["count >= 1"]   # filters the parallel group's call
        scenarios:
          alpha: {file: a.yaml, weight: 3, tags: {kind: smoke}}
          beta: {file: b.yaml}
          spike:
            file: a.yaml
            startTime: 2s
            load: {executor: per-vu-iterations, vus: 1, iterations: 1}
        """,
    )
    out = files / "out"
    assert main(["run", str(path), "--out", str(out), "-q"]) == 1
    printed = capsys.readouterr()
    assert "✗ turn.ttfa_ms p(95) < 1 p(95)=" in printed.out
    spike_line = next(line for line in printed.out.splitlines() if "{scenario:spike}" in line)
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    records = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    # its one call: counted when valid; an overloaded machine may make it invalid, and then it says so
    (spike_record,) = [r for r in records if r["scenario"] == "spike"]
    valid = not spike_record["outcome"].startswith("invalid:")
    assert ("count=1" if valid else "the call was invalid") in spike_line, spike_line
    # no seed: smooth weighted round-robin, so 8 picks at 3:1 are exactly 6 alpha and 2 beta
    assert collections.Counter(r["scenario"] for r in records) == {"alpha": 6, "beta": 2, "spike": 1}
    assert all(r["tags"]["kind"] == "smoke" for r in records if r["scenario"] == "alpha")
    assert all("kind" not in r["tags"] for r in records if r["scenario"] != "alpha")
    (spike,) = [r for r in records if r["scenario"] == "spike"]
    assert spike["tags"]["start_offset_s"] >= 2.0
    assert min(r["tags"]["start_offset_s"] for r in records if r["scenario"] != "spike") < 0.5
    suites = {suite.name: suite for suite in JUnitXml.fromfile(str(folder / "junit.xml"))}
    cases = {case.name: case for case in suites["thresholds"]}
    assert suites["thresholds"].tests == 2 and not cases["turn.ttfa_ms - p(95) < 1"].is_passed
    summary = json.loads((folder / "summary.json").read_text())
    assert [t["metric"] for t in summary["thresholds"]] == [
        "turn.ttfa_ms",
        "call.duration_ms{scenario:spike}",
    ]
    assert summary["thresholds"][0]["passed"] is False
    assert [load["executor"] for load in summary["load"]] == ["shared-iterations", "per-vu-iterations"]
    assert summary["load"][1]["startTime"] == "2s" and summary["load"][0]["scenarios"] == {
        "alpha": 3,
        "beta": 1,
    }
