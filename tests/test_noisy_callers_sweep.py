"""scenarios/noisy_callers.yaml, as a user runs it: SNR x jitter in one run, through the pacing and
analysis processes (the spool between them), into summary.json's levels and the report's section."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

SNRS = [40, 30, 20, 10]
JITTERS = [0, 40, 120]


def test_the_sweep_measures_every_level_and_the_report_plots_them(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "uvbench", "run", "scenarios/noisy_callers.yaml", "--out", str(tmp_path)]
        + ["-q", "--vus", "4"],  # 4 at a time, not 12: the suite's other tests share the machine
        capture_output=True,
        text=True,
        timeout=240,
    )
    # The noisy levels fail calls (missed turns): that is what the sweep shows, so the run exits 1;
    # its thresholds on the quiet room hold.
    assert done.returncode == 1, done.stdout + done.stderr
    assert "✓ turn.miss_rate{caller:snr=40dB} rate == 0" in done.stdout
    assert "✓ call.false_barge_in{caller:snr=40dB} rate == 0" in done.stdout
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    records = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    assert sorted((r["tags"]["caller"], r["tags"]["network"]) for r in records) == sorted(
        (f"snr={s}dB", f"jitter={j}ms") for s in SNRS for j in JITTERS
    )
    for r in records:
        figures = r["metrics"] | {k: v["value"] for k, v in (r.get("set_apart") or {}).items()}
        jitter = r["variant"]["network.jitter.mean_ms"]
        # The releases came through the spool: the link's delay is the network's, with the run's
        # analysis as with a call analysed in place.
        if jitter:
            assert 0 < figures["call.network_delay_max_ms"] <= 10 * jitter, r["scenario"]
        else:
            assert figures["call.network_delay_max_ms"] is None
        assert isinstance(figures["call.false_barge_in_count"], int)

    levels = json.loads((folder / "summary.json").read_text())["levels"]
    caller, network = levels["dimensions"]["caller"], levels["dimensions"]["network"]
    assert caller["axis"] == "caller.noise.snr_db" and [lv["x"] for lv in caller["levels"]] == SNRS
    assert network["axis"] == "network.jitter.mean_ms" and [lv["x"] for lv in network["levels"]] == JITTERS
    assert len(levels["cross"]) == 12
    by_label = {lv["label"]: lv for lv in caller["levels"]}
    # The local agent hears the café at 10 dB as a caller who never stops: it cannot take a turn.
    noisiest = by_label["snr=10dB"]
    if noisiest["valid"]:
        assert noisiest["turn.miss_rate"]["value"] > 0

    page = (folder / "report.html").read_text()
    section = re.search(r'<section id="levels">(.*?)</section>', page, flags=re.S)
    assert section is not None and '<a href="#levels">' in page
    # Latency, missed turns and false barge-ins have values at some level in any such run; talk-over
    # and underflows may not (an underflow rate needs 10 s of agent audio at a level), and then the
    # page says so in their place.
    from uvbench.report.html import LEVEL_NONE

    for figure in ("turn.ttfa_ms", "turn.miss_rate", "call.false_barge_in_count"):
        assert LEVEL_NONE[figure] not in section.group(1)
    assert section.group(1).count("<svg") + sum(text in section.group(1) for text in LEVEL_NONE.values()) == 5
    assert "snr=40dB" in section.group(1) and "jitter=120ms" in section.group(1)
    assert Path(folder / "calls").is_dir()
