"""bench/capacity.py's `--caller` / `--network`: what they add to a level's scenario, the one-line
error for bad input, and the pacer lateness it reads with an impairment (from the release)."""

from __future__ import annotations

import argparse
import importlib.util
from array import array
from pathlib import Path

import numpy as np
import pytest

from uvbench.call.timeline import Timeline
from uvbench.scenario import parse_scenarios

ROOT = Path(__file__).resolve().parents[1]


def _capacity():
    spec = importlib.util.spec_from_file_location("bench_capacity", ROOT / "bench" / "capacity.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


capacity = _capacity()


def _args(agent: str = "sink", caller: str | None = None, network: str | None = None) -> argparse.Namespace:
    return argparse.Namespace(agent=agent, chunk_ms=20, hold=20.0, caller=caller, network=network)


@pytest.mark.parametrize("agent", ["sink", "simulated"])
def test_caller_and_network_reach_the_level_scenario(agent: str) -> None:
    args = _args(agent, "{noise: {file: cafe.flac, snr_db: 20}, telephone: ulaw}", "{jitter: {mean_ms: 40}}")
    (scenario,) = parse_scenarios(capacity.level_text(args), source="t.yaml", base_dir=str(ROOT))
    assert scenario.caller is not None and scenario.caller.noise is not None
    assert scenario.caller.noise.snr_db == 20
    assert scenario.caller.telephone == "ulaw"
    assert scenario.network is not None and scenario.network.jitter is not None
    assert capacity.level_problem(args) is None


def test_without_options_the_scenario_is_unchanged() -> None:
    (scenario,) = parse_scenarios(capacity.level_text(_args()), source="t.yaml", base_dir=str(ROOT))
    assert scenario.caller is None and scenario.network is None
    assert capacity.level_text(_args("simulated")) == capacity.turns_text(20, 2)


@pytest.mark.parametrize(
    ("caller", "network", "expected"),
    [
        ("{noise: {file: cafe.flac", None, "--caller: not valid YAML"),
        ("[1, 2]", None, "--caller: expected an inline YAML mapping"),
        (None, "jitter", "--network: expected an inline YAML mapping"),
        ("{noise: {file: missing.flac, snr_db: 20}}", None, "not found"),
        (None, "{jitter: {mean_ms: -4}}", "network.jitter.mean_ms"),
    ],
)
def test_bad_options_are_one_line(caller: str | None, network: str | None, expected: str) -> None:
    problem = capacity.level_problem(_args(caller=caller, network=network))
    assert problem is not None and expected in problem
    assert "\n" not in problem


def _timeline(rows: list[tuple[int, int, int, int]], release: list[int]) -> Timeline:
    timeline = Timeline(0, 0)
    timeline.audio_out = array("q", [v for row in rows for v in row])
    timeline.audio_out_release = array("q", release)
    return timeline


def test_lateness_is_counted_from_the_release_with_an_impairment() -> None:
    # (due, sent, start, end): the link held the second chunk 40 ms, the pacer sent it 1 ms after.
    rows = [(0, 2_000_000, 0, 320), (20_000_000, 61_000_000, 320, 640)]
    late, delay = capacity.chunk_lateness_ms(_timeline(rows, [0, 60_000_000]))
    assert late.tolist() == [2.0, 1.0]
    assert delay is not None and delay.tolist() == [0.0, 40.0]


def test_lateness_is_counted_from_the_deadline_without_one() -> None:
    rows = [(0, 2_000_000, 0, 320), (20_000_000, 61_000_000, 320, 640)]
    late, delay = capacity.chunk_lateness_ms(_timeline(rows, []))
    assert late.tolist() == [2.0, 41.0]
    assert delay is None
    assert np.asarray(late).dtype == np.float64
