"""Figures per impairment level (`uvbench.metrics.levels`): the levels of the caller's audio and of
the network a run swept, each level's figures equal to the aggregate's for its calls, numeric or
categorical x, both dimensions crossed, the bound on levels, and summary.json holding them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from uvbench.metrics.aggregate import UNDERFLOW_MIN_AUDIO_S, aggregate
from uvbench.metrics.levels import MAX_LEVELS, NOT_SET, impairment_levels, level_of
from uvbench.report.finish import finish_run


def call(
    n: int,
    *,
    caller: str | None = None,
    network: str | None = None,
    variant: dict[str, Any] | None = None,
    ttfa: float | None = 800.0,
    talk_over: float = 0.0,
    false_barge_ins: int | None = 0,
    underflows: int = 0,
    agent_audio_ms: float = 20_000.0,
    outcome: str = "completed",
    barge_in_talk_over: float | None = None,
) -> dict[str, Any]:
    """A call record as `results.jsonl` holds it, with the figures levels read."""
    tags: dict[str, Any] = {"vu": n}
    if caller is not None:
        tags["caller"] = caller
    if network is not None:
        tags["network"] = network
    turn_metrics = {"turn.ttfa_ms": ttfa, "turn.talk_over_ms": talk_over}
    record: dict[str, Any] = {
        "scenario": "sweep",
        "variant": variant,
        "call_id": f"{n:08d}-0000-0000-0000-000000000000",
        "outcome": outcome,
        "tags": tags,
        "metrics": {
            "call.false_barge_in_count": false_barge_ins,
            "call.underflow_count": underflows,
            "call.agent_audio_ms": agent_audio_ms,
        },
        "turns": [{"index": 0, "step": 1, "missed": ttfa is None, "metrics": turn_metrics}],
        "barge_ins": [],
    }
    if barge_in_talk_over is not None:
        record["barge_ins"] = [
            {"index": 0, "step": 2, "metrics": {"interrupt.talk_over_ms": barge_in_talk_over}}
        ]
    return record


SNRS = (30, 20, 10, 0)


def snr_sweep(calls_per_level: int = 6) -> list[dict[str, Any]]:
    """A matrix over caller.noise.snr_db: noisier levels answer later, miss turns, talk over the
    user and stop as if interrupted more often; one invalid call at 0 dB."""
    records = []
    n = 0
    for k in range(calls_per_level):
        for snr in SNRS:
            noise = (30 - snr) / 10  # 0..3
            records.append(
                call(
                    n,
                    caller=f"snr={snr}dB",
                    variant={"caller.noise.snr_db": snr},
                    ttfa=None if noise == 3 and k % 3 == 0 else 700.0 + 100 * noise + 13 * k,
                    talk_over=40.0 * noise + k,
                    false_barge_ins=int(noise >= 2) * (k % 2),
                    underflows=k % 2,
                )
            )
            n += 1
    records.append(
        call(n, caller="snr=0dB", variant={"caller.noise.snr_db": 0}, outcome="invalid:generator_overloaded")
    )
    return records


def assert_figures_are_the_aggregates(figures: dict[str, Any], records: list[dict[str, Any]]) -> None:
    """A level's figures (summary.json's form) are those of `aggregate` over its calls."""
    agg = aggregate(records)
    assert (
        figures["calls"] == agg.calls and figures["valid"] == agg.valid and figures["invalid"] == agg.invalid
    )
    ttfa = agg.metrics["turn.ttfa_ms"]
    assert figures["turn.ttfa_ms"] == {"count": ttfa.count, "p50": ttfa.p50, "p95": ttfa.p95}
    for rate in ("turn.miss_rate", "call.false_barge_in_rate", "audio.underflow_per_min"):
        assert figures[rate] == agg.rates[rate].to_json(), rate
    fbi = agg.metrics["call.false_barge_in_count"]
    assert figures["call.false_barge_in_count"] == {"count": fbi.count, "mean": fbi.mean}
    talk = agg.metrics["turn.talk_over_ms"]
    assert figures["turn.talk_over_ms"] == {"count": talk.count, "mean": talk.mean}
    if "interrupt.talk_over_ms" in agg.metrics:
        assert figures["interrupt.talk_over_ms"]["mean"] == agg.metrics["interrupt.talk_over_ms"].mean
    else:
        assert "interrupt.talk_over_ms" not in figures


def test_a_run_without_impairments_has_no_levels():
    assert impairment_levels([call(n) for n in range(5)]) is None
    assert impairment_levels([]) is None


def test_a_numeric_matrix_axis_gives_each_level_its_value_and_the_aggregates_figures():
    records = snr_sweep()
    levels = impairment_levels(records)
    assert levels is not None and list(levels.dimensions) == ["caller"] and not levels.cross
    caller = levels.dimensions["caller"]
    assert caller.axis == "caller.noise.snr_db" and caller.left_out == 0
    # From the cleanest level: a higher SNR is a quieter room.
    assert [(lv.label, lv.x) for lv in caller.levels] == [
        (f"snr={s}dB", s) for s in sorted(SNRS, reverse=True)
    ]
    out = levels.to_json()["dimensions"]["caller"]
    assert out["scale"] == "numeric"
    for level in out["levels"]:
        mine = [r for r in records if r["tags"]["caller"] == level["label"]]
        assert_figures_are_the_aggregates(level, mine)
    # The sweep shows: the noisiest level answers later and misses turns, the clean one never does.
    by_x = {lv["x"]: lv for lv in out["levels"]}
    assert by_x[0]["turn.miss_rate"]["numerator"] == 2 and by_x[30]["turn.miss_rate"]["numerator"] == 0
    assert by_x[0]["turn.ttfa_ms"]["p50"] > by_x[30]["turn.ttfa_ms"]["p50"]
    assert by_x[0]["invalid"] == 1 and by_x[0]["calls"] == 7
    assert (
        by_x[0]["call.false_barge_in_rate"]["value"] == 0.5
        and by_x[30]["call.false_barge_in_rate"]["value"] == 0
    )


def test_the_levels_equal_the_aggregate_grouped_by_level():
    records = snr_sweep()
    groups = aggregate(records, by=lambda r: level_of(r, "caller")).groups
    for level in impairment_levels(records).dimensions["caller"].levels:
        group = groups[level.label]
        assert level.figures.valid == group.valid
        assert level.figures.metrics["turn.ttfa_ms"] == group.metrics["turn.ttfa_ms"]
        assert level.figures.rates["audio.underflow_per_min"] == group.rates["audio.underflow_per_min"]


def test_underflows_per_minute_need_the_aggregates_minimum_of_audio():
    short = UNDERFLOW_MIN_AUDIO_S * 1000 / 5  # four calls of one level fall short, the run's eight do not
    records = [call(n, caller=f"snr={10 * (n % 2)}dB", underflows=1, agent_audio_ms=short) for n in range(8)]
    for level in impairment_levels(records).to_json()["dimensions"]["caller"]["levels"]:
        assert level["audio.underflow_per_min"]["value"] is None
        assert level["audio.underflow_per_min"]["numerator"] == 4
    assert aggregate(records).rate("audio.underflow_per_min") == pytest.approx(8 / (8 * short / 60_000))


def test_labels_without_a_numeric_axis_are_categorical_in_first_seen_order():
    records = [
        call(0, caller="snr=10dB+ulaw"),
        call(1, caller="clean"),
        call(2),  # a scenario without caller:
        call(3, caller="snr=10dB+ulaw"),
    ]
    caller = impairment_levels(records).dimensions["caller"]
    assert caller.axis is None
    assert [(lv.label, lv.x, lv.figures.calls) for lv in caller.levels] == [
        ("snr=10dB+ulaw", 0, 2),
        ("clean", 1, 1),
        (NOT_SET, 2, 1),
    ]
    assert impairment_levels(records).to_json()["dimensions"]["caller"]["scale"] == "categorical"


def test_two_caller_axes_varying_make_the_caller_categorical():
    records = [
        call(
            n,
            caller=f"snr={snr}dB{'+ulaw' if tel else ''}",
            variant={"caller.noise.snr_db": snr, "caller.telephone": tel},
        )
        for n, (snr, tel) in enumerate([(20, None), (20, "ulaw"), (0, None), (0, "ulaw")])
    ]
    caller = impairment_levels(records).dimensions["caller"]
    assert caller.axis is None and len(caller.levels) == 4


def test_an_axis_of_the_other_dimension_does_not_place_this_one():
    # The caller labels vary (two scenarios) while the only matrix axis is the network's.
    records = [
        call(
            n,
            caller=("clean", "snr=0dB")[n % 2],
            network=f"jitter={j}ms",
            variant={"network.jitter.mean_ms": j},
        )
        for n, j in enumerate([0, 0, 40, 40, 120, 120])
    ]
    levels = impairment_levels(records)
    assert levels.dimensions["caller"].axis is None
    assert levels.dimensions["network"].axis == "network.jitter.mean_ms"
    assert [lv.x for lv in levels.dimensions["network"].levels] == [0, 40, 120]


def test_both_dimensions_are_crossed_cell_by_cell():
    records = []
    n = 0
    for snr in (20, 0):
        for jitter in (0, 40, 120):
            for _ in range(3):
                records.append(
                    call(
                        n,
                        caller=f"snr={snr}dB",
                        network=f"jitter={jitter}ms",
                        variant={"caller.noise.snr_db": snr, "network.jitter.mean_ms": jitter},
                        ttfa=600.0 + jitter + (20 - snr) * 10 + n,
                        barge_in_talk_over=float(jitter),
                    )
                )
                n += 1
    levels = impairment_levels(records)
    assert list(levels.dimensions) == ["caller", "network"]
    out = levels.to_json()
    assert len(out["cross"]) == 6
    assert [(c["caller"], c["network"]) for c in out["cross"]][:3] == [
        ("snr=20dB", "jitter=0ms"),
        ("snr=20dB", "jitter=40ms"),
        ("snr=20dB", "jitter=120ms"),
    ]
    for cell in out["cross"]:
        mine = [
            r
            for r in records
            if (r["tags"]["caller"], r["tags"]["network"]) == (cell["caller"], cell["network"])
        ]
        assert cell["calls"] == 3
        assert_figures_are_the_aggregates(cell, mine)
    for level in out["dimensions"]["network"]["levels"]:
        assert_figures_are_the_aggregates(
            level, [r for r in records if r["tags"]["network"] == level["label"]]
        )


def test_a_dimension_with_one_label_is_constant_not_a_level():
    records = [call(n, caller=f"snr={10 * (n % 3)}dB", network="jitter=40ms") for n in range(9)]
    levels = impairment_levels(records)
    assert list(levels.dimensions) == ["caller"] and levels.constant == {"network": "jitter=40ms"}
    assert not levels.cross
    only = impairment_levels([call(n, network="none") for n in range(3)])
    assert only.dimensions == {} and only.constant == {"network": "none"}


def test_past_the_bound_the_levels_with_the_fewest_calls_are_left_out():
    records = []
    for level in range(MAX_LEVELS + 3):
        calls = 1 if level < 3 else 2  # the first three levels have the fewest calls
        records += [
            call(len(records), caller=f"snr={level}dB", variant={"caller.noise.snr_db": level})
            for _ in range(calls)
        ]
    caller = impairment_levels(records).dimensions["caller"]
    assert caller.left_out == 3 and len(caller.levels) == MAX_LEVELS
    assert [lv.x for lv in caller.levels] == list(range(MAX_LEVELS + 2, 2, -1))
    assert impairment_levels(records).to_json()["dimensions"]["caller"]["left_out"] == 3


@pytest.mark.parametrize("with_levels", [True, False])
def test_summary_json_holds_the_levels_only_for_a_run_with_impairments(tmp_path, with_levels):
    folder = tmp_path / "20260101-000000-sweep"
    folder.mkdir()
    records = snr_sweep(3) if with_levels else [call(n) for n in range(4)]
    (folder / "summary.json").write_text(json.dumps({"levels": {"stale": True}}))  # a rebuild's folder
    finish_run(folder, records, [])
    summary = json.loads((folder / "summary.json").read_text())
    if with_levels:
        assert summary["levels"] == json.loads(json.dumps(impairment_levels(records).to_json()))
        assert summary["levels"]["dimensions"]["caller"]["axis"] == "caller.noise.snr_db"
    else:
        assert "levels" not in summary
