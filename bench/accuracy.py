"""How far uvbench's figures are from the local server's ground truth, one call at a time and in
lockstep at scale.

`uvbench run` (the real runner: pacing and analysis processes) runs a scenario (a greeting, a
spoken turn, a barge-in 400 ms into the reply) against a local server this script starts in its
own process. Afterwards every call's figures and anchors (its record and timeline in the run
folder) are held against what the server recorded on the same CLOCK_MONOTONIC
(`GET /_uvbench/calls/<id>/ground_truth?input=1`), stamped when the bytes were written or read:

- anchor: when the server read the chunk holding the turn's last speech sample, against the
  moment that chunk was complete on the client's stream clock (`t0 + end of chunk / rate`): the
  sender's own delay plus the loopback. (The chunk ends after `t_se` by a fixed part of a chunk,
  known exactly and printed apart: any client that streams in chunks has it.) Split in two:
  `anchor.sent`, when that chunk left the client against that moment (the client's own delay, what
  would bias every turn figure), and `anchor.read`, the server's read against the send (loopback,
  and how late the server's own loop got to it: at a few hundred calls the server's core is full);
- greeting: the first sound heard (`call.first_audio_ms`'s end) vs when the server's writes of the
  greeting's frames say it is heard: each frame played on arrival, back to back (its first byte +
  first audible sample / rate, unless the server's pacer wrote a frame before it late, which
  delays the sound for real);
- ttfb: the reply's first frame's arrival vs the server's write of it;
- ttfa: the first sound heard vs when the server's writes say it is heard (as for the greeting);
- thinking: `state: thinking`'s arrival vs the server's write of it;
- clear: `playback_clear_buffer`'s arrival vs its write.

Figures the load generator set apart (docs/metrics.md) are left out and counted. Reported per
figure: count, median, p99 and max of the error, in ms.

    .venv/bin/python bench/accuracy.py                              # 20 calls one at a time
    .venv/bin/python bench/accuracy.py --vus 200 --iterations 400   # lockstep: two rounds of 200
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import cpu_model  # noqa: E402
from uvbench.metrics import validity  # noqa: E402
from uvbench.report.run_folder import load_timeline  # noqa: E402
from uvbench.server.process import ServerProcess  # noqa: E402
from uvbench.server.truth import heard_ns  # noqa: E402

NS = 1_000_000_000
OUT_RATE = 24000
KEY_ENV = "UVBENCH_ACCURACY_KEY"
SCENARIO = """
    name: accuracy
    target: {{base_url: {url}, api_key_env: {key_env}}}
    call:
      medium:
        serverWebSocket: {{inputSampleRate: 16000, outputSampleRate: {rate}, clientBufferSizeMs: {buffer}}}
    client: {{record: none}}
    script:
      - wait_for: agent_done
      - say: hello_16k.wav
      - wait_for: agent_audible
      - barge_in: interrupt_48k.flac
        after: 400ms
      - wait_for: agent_done
      - hang_up
"""


FIGURES = ("anchor", "anchor.sent", "anchor.read", "greeting", "ttfb", "ttfa", "thinking", "clear")


SHIFTS_MS: list[float] = []
"""How much later than first byte + offset the server's writes say each first sound is heard."""


def heard_truth(reply: dict) -> int:
    """When the client should hear the reply's first audible sample, from the server's writes of
    its frames up to that one (so a frame the server's own pacer wrote late, which the client
    truly hears late, is no error of the client's); from the first byte alone for a server that
    does not keep them."""
    sample = reply["first_audible_sample"]
    naive = reply["first_byte_ns"] + sample * NS // OUT_RATE
    heard = heard_ns(reply.get("lead_writes_ns") or [], reply.get("frame_samples") or 0, sample, OUT_RATE)
    if heard is None:
        return naive
    SHIFTS_MS.append((heard - naive) / 1e6)
    return heard


def errors_of(
    record: dict, timeline, truth: dict, worst: list[dict] | None = None
) -> tuple[dict[str, list[float]], list[float]]:
    """(figure -> signed errors in ms, chunk quantization of each anchor in ms) for one call; each
    error also goes to `worst` with its client stamp and the loop lag the client saw around it."""
    out: dict[str, list[float]] = {k: [] for k in FIGURES}
    quantization: list[float] = []
    lag_event = timeline.first("loop.lag")
    loop = validity.LoopLag.from_data(lag_event.data) if lag_event else None

    def add(name: str, error_ns: int, stamp_ns: int) -> None:
        out[name].append(error_ns / 1e6)
        if worst is not None:
            worst.append({
                "figure": name, "error_ms": round(error_ns / 1e6, 2), "call": record["call_id"][:8],
                "iteration": record["tags"].get("iteration"), "stamp_ns": stamp_ns,
                "client_lag_ms": round(loop.lag_at(stamp_ns) / 1e6, 1) if loop else None,
            })  # fmt: skip

    replies = [r for r in truth["replies"] if r["first_byte_ns"]]
    greeting = next((r for r in replies if r["kind"] == "greeting"), None)
    answers = [r for r in replies if r["kind"] == "reply"]
    first_heard = record["anchors"].get("first_audible_ns")
    if greeting and first_heard and "call.first_audio_ms" in record["metrics"]:
        add("greeting", first_heard - heard_truth(greeting), first_heard)
    started = timeline.first("pacer.started").data
    t0, rate, n = started["t0_ns"], started["sample_rate"], started["chunk_samples"]
    arrivals = truth["input"]["arrivals"]  # [read_ns, end_sample] of every input frame
    says = [e.data for e in timeline.of_kind("utterance.queued") if e.data["kind"] == "say"]
    rows = timeline.audio_out_rows()  # (due, sent, start_sample, end_sample) of every chunk
    for turn, say in zip(record["turns"], says, strict=False):
        last = say["speech_end_sample"] - 1
        if "turn.ttfb_ms" in turn["metrics"]:  # not set apart: the anchor counts too
            chunk_end = (last // n + 1) * n
            due = t0 + -(-chunk_end * NS // rate)
            read = next((t for t, end in arrivals if end >= chunk_end), None)
            sent = next((row[1] for row in rows if row[3] >= chunk_end), None)
            if read is not None and sent is not None:
                add("anchor", read - due, sent)
                add("anchor.sent", sent - due, sent)
                add("anchor.read", read - sent, sent)
                quantization.append((due - turn["t_se_ns"]) / 1e6)
    voiced = [t for t in truth["turns"] if t["kind"] == "voice"]
    for turn, reply, heard_turn in zip(record["turns"], answers, voiced, strict=False):
        m = turn["metrics"]
        if turn["first_audio_ns"] and "turn.ttfb_ms" in m:
            add("ttfb", turn["first_audio_ns"] - reply["first_byte_ns"], turn["first_audio_ns"])
        if turn["first_audible_ns"] and reply["first_audible_sample"] is not None and "turn.ttfa_ms" in m:
            add("ttfa", turn["first_audible_ns"] - heard_truth(reply), turn["first_audible_ns"])
        written = heard_turn.get("thinking_sent_ns")
        if turn["thinking_ns"] and written and "turn.thinking_ms" in m:
            add("thinking", turn["thinking_ns"] - written, turn["thinking_ns"])
    for barge, clear in zip(record["barge_ins"], truth["clears"], strict=False):
        if barge["clear_ns"] and "interrupt.clear_ms" in barge["metrics"]:
            add("clear", barge["clear_ns"] - clear["sent_ns"], barge["clear_ns"])
    return out, quantization


def set_apart_count(record: dict) -> int:
    items = [record, *record["turns"], *record["barge_ins"]]
    return sum(len(item.get("set_apart") or {}) for item in items)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--vus", type=int, default=1, help="calls at once (all start together)")
    parser.add_argument("--iterations", type=int, default=20, help="calls in all")
    parser.add_argument("--buffer", type=int, default=60, help="clientBufferSizeMs")
    parser.add_argument("--workers", type=int, default=None, help="uvbench run --workers")
    parser.add_argument("--worst", type=int, default=0, help="print the N largest errors of each figure")
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"{os.cpu_count()} CPUs ({cpu_model()}); load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    with (
        tempfile.TemporaryDirectory(prefix="uvbench-accuracy-") as tmp,
        ServerProcess({"agent": {"latency": {"kind": "fixed", "ms": 300}}}) as server,
    ):
        scenario = Path(tmp) / "accuracy.yaml"
        scenario.write_text(
            textwrap.dedent(
                SCENARIO.format(url=server.api_url, key_env=KEY_ENV, rate=OUT_RATE, buffer=args.buffer)
            )
        )
        command = [sys.executable, "-m", "uvbench", "run", str(scenario), "--out", tmp, "-q",
                   "--vus", str(args.vus), "--iterations", str(args.iterations)]  # fmt: skip
        if args.workers:
            command += ["--workers", str(args.workers)]
        started = time.monotonic()
        done = subprocess.run(command, env={**os.environ, KEY_ENV: server.api_key}, capture_output=True,
                              text=True, cwd=ROOT)  # fmt: skip
        took = time.monotonic() - started
        (folder,) = [p for p in Path(tmp).iterdir() if p.is_dir()]
        records = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
        totals: dict[str, list[float]] = {}
        quantization: list[float] = []
        details: list[dict] = []
        with httpx.Client(headers={"X-API-Key": server.api_key}) as http:
            for record in records:
                truth = http.get(
                    f"{server.base_url}/_uvbench/calls/{record['call_id']}/ground_truth", params={"input": 1}
                ).json()
                timeline = load_timeline(folder / record["artifacts"]["timeline"])
                errors, q = errors_of(record, timeline, truth, details)
                quantization += q
                for name, values in errors.items():
                    totals.setdefault(name, []).extend(values)
    outcomes: dict[str, int] = {}
    for record in records:
        outcomes[record["outcome"]] = outcomes.get(record["outcome"], 0) + 1
    print(f"uvbench run --vus {args.vus} --iterations {args.iterations} (clientBufferSizeMs {args.buffer}):"
          f" {took:.0f} s, exit {done.returncode}, outcomes {outcomes},"
          f" figures set apart {sum(set_apart_count(r) for r in records)}")  # fmt: skip
    for name, values in totals.items():
        err = np.abs(np.array(values))
        row = {
            "figure": name,
            "n": int(err.size),
            "median_ms": round(float(np.median(err)), 3) if err.size else None,
            "p99_ms": round(float(np.percentile(err, 99)), 3) if err.size else None,
            "max_ms": round(float(err.max()), 3) if err.size else None,
        }
        print(json.dumps(row), flush=True)
    if details and args.worst:
        start = min(d["stamp_ns"] for d in details)
        for name in FIGURES:
            rows = sorted((d for d in details if d["figure"] == name), key=lambda d: -abs(d["error_ms"]))
            for d in rows[: args.worst]:
                # When in the run (s from its first stamp), not the raw monotonic stamp.
                shown = {k: v for k, v in d.items() if k != "stamp_ns"}
                print("  worst", json.dumps({**shown, "at_s": round((d["stamp_ns"] - start) / 1e9, 3)}))
    if SHIFTS_MS:
        moved = [x for x in SHIFTS_MS if x > 0]
        most = max(moved, default=0.0)
        print(
            f"(the server's pacer wrote a frame before the first audible sample late in {len(moved)} of"
            f" {len(SHIFTS_MS)} greetings and replies: heard later by up to {most:.2f} ms)"
        )
    if quantization:
        q = np.array(quantization)
        print(f"(the anchor's chunk ends {q.min():.2f}-{q.max():.2f} ms after t_se: where the clip's last"
              " speech sample falls inside its 20 ms chunk)")  # fmt: skip
    load = os.getloadavg()
    print(f"(load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})")


if __name__ == "__main__":
    main()
