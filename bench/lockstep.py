"""Calls that all start and end together (k6's `--vus N --duration D`), against a ramp to the same
load, and against another checkout of uvbench (before and after a change), side by side.

Each run is `uvbench run scenarios/quickstart.yaml` as a user types it (the embedded local server
beside the client on this machine, recordings kept), from the given checkout. Reported per run:
the calls and their outcomes (invalid ones: the generator fell behind), the figures set apart and
why (docs/metrics.md; a checkout without the rule has none), turn latency (TTFA) of the valid
calls, each call's pacer lateness p99 (median and worst over calls), the worst loop lag a call
saw, the run's wall time, and the machine's CPU pressure while it ran (Linux PSI: the share of
time some task waited for a CPU).

    .venv/bin/python bench/lockstep.py --vus 50 --duration 1m
    .venv/bin/python bench/lockstep.py --vus 200 --duration 2m --ramp 30s
    .venv/bin/python bench/lockstep.py --vus 50 --duration 1m --checkout /path/to/older/uvbench
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import cpu_model  # noqa: E402


def pressure_us() -> int:
    try:
        return int(Path("/proc/pressure/cpu").read_text().splitlines()[0].rsplit("total=", 1)[1])
    except OSError:
        return 0


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def run(checkout: Path, load: list[str], label: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="uvbench-lockstep-") as out:
        command = [
            sys.executable,
            "-m",
            "uvbench",
            "run",
            "scenarios/quickstart.yaml",
            "--out",
            out,
            "-q",
            *load,
        ]
        env = {**os.environ, "PYTHONPATH": str(checkout)}
        psi0, t0, load0 = pressure_us(), time.monotonic(), os.getloadavg()[0]
        done = subprocess.run(command, cwd=checkout, env=env, capture_output=True, text=True)
        wall = time.monotonic() - t0
        psi = (pressure_us() - psi0) / 1e6 / wall
        folders = [p for p in Path(out).iterdir() if p.is_dir()]
        if not folders:
            raise SystemExit(f"{label}: no run folder ({done.stderr[-2000:]})")
        records = [json.loads(line) for line in (folders[0] / "results.jsonl").read_text().splitlines()]
    outcomes: dict[str, int] = {}
    for r in records:
        outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
    valid = [r for r in records if not r["outcome"].startswith("invalid:")]
    ttfa = [
        t["metrics"]["turn.ttfa_ms"] for r in valid for t in r["turns"] if t["metrics"].get("turn.ttfa_ms")
    ]
    apart: dict[str, int] = {}
    for r in records:
        for item in [r, *r["turns"], *r["barge_ins"]]:
            for entry in (item.get("set_apart") or {}).values():
                apart[entry["reason"]] = apart.get(entry["reason"], 0) + 1
    p99 = [
        r["metrics"]["pacer.lateness_p99_ms"] for r in records if r["metrics"].get("pacer.lateness_p99_ms")
    ]
    lag = [r["metrics"].get("pacer.loop_lag_max_ms") or 0.0 for r in records]
    return {
        "run": label,
        "load": " ".join(load),
        "calls": len(records),
        "invalid": sum(n for o, n in outcomes.items() if o.startswith("invalid:")),
        "failed": sum(n for o, n in outcomes.items() if o.startswith("failed:")),
        "outcomes": outcomes,
        "set_apart": apart,
        "ttfa_n": len(ttfa),
        "ttfa_p50_ms": round(percentile(ttfa, 50) or 0),
        "ttfa_p95_ms": round(percentile(ttfa, 95) or 0),
        "pacer_p99_per_call_median_ms": round(statistics.median(p99), 2) if p99 else None,
        "pacer_p99_per_call_max_ms": round(max(p99), 2) if p99 else None,
        "loop_lag_max_ms": round(max(lag), 1) if lag else None,
        "wall_s": round(wall),
        "cpu_pressure_pct": round(100 * psi),
        "load_average_at_start": round(load0, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--vus", type=int, default=50)
    parser.add_argument("--duration", default="1m")
    parser.add_argument("--ramp", default=None, help="also run a ramp to --vus over this long, then held")
    parser.add_argument("--checkout", type=Path, default=None, help="another uvbench checkout to run too")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs ({cpu_model()}); load average {os.getloadavg()[0]:.2f}")
    lockstep = ["--vus", str(args.vus), "--duration", args.duration]
    if args.workers:
        lockstep += ["--workers", str(args.workers)]
    runs = []
    if args.checkout is not None:
        runs.append((args.checkout.resolve(), lockstep, f"lockstep ({args.checkout.name})"))
    runs.append((ROOT, lockstep, "lockstep"))
    if args.ramp:
        from uvbench.scenario import duration_seconds

        hold = duration_seconds(args.duration) - duration_seconds(args.ramp)
        stages = ["--stage", f"{args.ramp}:{args.vus},{hold:g}s:{args.vus}"]
        runs.append((ROOT, stages + (["--workers", str(args.workers)] if args.workers else []), "ramped"))
    for checkout, load, label in runs:
        print(json.dumps(run(checkout, load, label)), flush=True)
        time.sleep(5)  # the last calls' analysis and teardown


if __name__ == "__main__":
    main()
