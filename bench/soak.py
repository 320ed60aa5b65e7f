"""A soak: `uvbench run` at a fixed concurrency for a long while, its memory and its pacing sampled.

    .venv/bin/python bench/soak.py --vus 100 --minutes 60 [--scenario scenarios/quickstart.yaml]

Every `--every` seconds it reads the resident memory (RSS, from /proc) of the run's processes,
grouped by role: the coordinator (the `uvbench run` process), the embedded server (`uvbench
serve`), and the pacing and analysis processes. At the end it prints, per role, the RSS after the
warm-up (`--warm-up`, default 2 minutes) and at the end, and the growth between them; and the
pacer's lateness p99 of the calls that started in the first and in the last ten minutes (from
results.jsonl). docs/reliability.md has the figures of a run.

Linux only (/proc). Nothing here is a test: a soak's figures depend on the machine and its load,
which the output names.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.machine import cpu_model  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")


def _parents() -> dict[int, int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def _tree(root: int) -> set[int]:
    parents = _parents()
    found, frontier = {root}, {root}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _rss_mib(pid: int) -> float:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20
    except (OSError, IndexError, ValueError):
        return 0.0


def _role(pid: int, root: int) -> str:
    if pid == root:
        return "coordinator"
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "gone"
    return "server" if b"serve" in cmdline else "pacing+analysis"


def sample(root: int) -> dict[str, float]:
    roles: dict[str, float] = {}
    for pid in _tree(root):
        role = _role(pid, root)
        if role != "gone":
            roles[role] = roles.get(role, 0.0) + _rss_mib(pid)
    return roles


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", default=str(ROOT / "scenarios" / "quickstart.yaml"))
    parser.add_argument("--vus", type=int, default=100)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--every", type=float, default=30.0, help="seconds between samples")
    parser.add_argument("--warm-up", type=float, default=2.0, help="minutes before the baseline sample")
    parser.add_argument("--out", default=None, help="where the run folder goes (default: a temp folder)")
    args = parser.parse_args()

    out = Path(args.out or tempfile.mkdtemp(prefix="uvbench-soak-"))
    command = [
        sys.executable, "-m", "uvbench", "run", args.scenario, "--vus", str(args.vus),
        "--duration", f"{args.minutes * 60:.0f}s", "--out", str(out), "-q", "--record", "none",
    ]  # fmt: skip
    print(f"machine: {os.cpu_count()} CPUs ({cpu_model()}), Python {platform.python_version()}")
    print("command:", " ".join(command))
    started = time.monotonic()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples: list[tuple[float, dict[str, float], float]] = []
    try:
        while proc.poll() is None:
            time.sleep(args.every)
            if proc.poll() is not None:
                break
            t_min = (time.monotonic() - started) / 60
            roles = sample(proc.pid)
            load1 = os.getloadavg()[0]
            samples.append((t_min, roles, load1))
            shown = "  ".join(f"{k} {v:7.1f}" for k, v in sorted(roles.items()))
            print(f"{t_min:6.1f} min  RSS MiB: {shown}  load {load1:.2f}", flush=True)
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate()
    print(stdout.strip().splitlines()[-1] if stdout.strip() else "(no output)")
    if stderr.strip():
        print(stderr.strip()[-2000:])

    # After the warm-up and before the load's end (the processes then exit, their memory with them).
    warm = [s for s in samples if args.warm_up <= s[0] <= args.minutes]
    if len(warm) >= 2:
        first, last = warm[0], warm[-1]
        print(f"\nRSS from minute {first[0]:.1f} to minute {last[0]:.1f} (MiB):")
        for role in sorted(first[1]):
            a, b = first[1][role], last[1].get(role, 0.0)
            print(f"  {role:<16} {a:8.1f} -> {b:8.1f}  {100 * (b - a) / a:+6.1f} %")
        peak = {role: max(s[1].get(role, 0.0) for s in warm) for role in first[1]}
        print("  peak after warm-up: " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(peak.items())))
        print(f"  load average (1 min) over the run: {statistics.mean(s[2] for s in samples):.2f}")

    [results] = list(out.glob("*/results.jsonl")) or [None]
    if results is not None:
        records = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
        span = args.minutes * 60

        def p99s(lo: float, hi: float) -> list[float]:
            return [
                r["metrics"]["pacer.lateness_p99_ms"]
                for r in records
                if lo <= (r.get("tags") or {}).get("start_offset_s", -1) < hi
                and r["metrics"].get("pacer.lateness_p99_ms") is not None
            ]

        window = min(600.0, span / 3)
        early, late = p99s(args.warm_up * 60, args.warm_up * 60 + window), p99s(span - window, span)
        outcomes: dict[str, int] = {}
        for r in records:
            outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
        print(f"\ncalls: {len(records)}  outcomes: {outcomes}")
        for name, values in (("first", early), ("last", late)):
            if values:
                values.sort()
                print(
                    f"  pacer lateness p99 per call, {name} {window / 60:.0f} min ({len(values)} calls):"
                    f" median {statistics.median(values):.2f} ms, worst {values[-1]:.2f} ms"
                )
        print(f"run folder: {results.parent}")
    return proc.returncode or 0


if __name__ == "__main__":
    raise SystemExit(main())
