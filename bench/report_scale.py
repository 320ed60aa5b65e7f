"""How long `uvbench report DIR` takes on a 10,000-call run folder, and how big the folder and its page are.

For each record policy (`client: {record: all}` and `{record: none}`):

1. a real small run: `uvbench run` of a short scenario (the greeting, one spoken turn answered, hang
   up) against the embedded local server, `--vus 4 --iterations 8`;
2. a big run folder built from it without making calls: every call's files (record, timeline,
   recording) copied under new stems, `--calls` of them (10,000 by default), call k a copy of the
   small run's call k mod 8. Each copy gets a distinct call id and its own tags (iteration k,
   attempt k+1, vu k mod 4; the small run's other tags kept), written alike into its call JSON and
   its line of results.jsonl. results.jsonl lists the calls in an order other than their stems'
   (shuffled within windows of 8, as analysis processes finish them), so rebuilding it exactly is
   checked too. The timelines are copied byte for byte (their own `call.created` still names the
   small run's call: no figure reads it);
3. `uvbench report DIR` on it, `--runs` times (3), wall clock of the whole command (a child process:
   the interpreter's start and its imports included), best and median; then whether results.jsonl
   came out byte for byte as built.

It prints the folder's size (every file under it, in bytes: no block rounding), report.html's size,
the machine (nproc, the CPU model) and the load average before and after each timing.

`--src DIR` runs both commands with another copy of uvbench's source (e.g. main's, from
`git archive main | tar -x -C DIR`), so before and after can be measured in one session;
`--report-src DIR` takes the reporting code from elsewhere than the run's (old run folders read by
new code); `--against DIR` also times `uvbench report` with the code in DIR on the same folder,
run for run in alternation with `--report-src`'s (the machine's speed drifts over minutes: this
compares the two under the same conditions; build the folder with the older code, which the
newer reads too).

    .venv/bin/python bench/report_scale.py                               # this tree, 10,000 calls
    .venv/bin/python bench/report_scale.py --src /tmp/main-src           # main's code, same figures
    .venv/bin/python bench/report_scale.py --src /tmp/main-src --report-src .   # old folder, new code
    .venv/bin/python bench/report_scale.py --calls 2000 --policies none --keep /tmp/rs
    .venv/bin/python bench/report_scale.py --src /tmp/main-src --report-src . --against /tmp/main-src
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import cpu_model  # noqa: E402

SCENARIO = """\
name: scale
call:
  experimentalSettings: {{uvbench: {{agent: {{greeting: "Hi.", replies: ["Okay."]}}}}}}
client: {{record: {record}, ping_interval: 0}}
script:
  - wait_for: agent_done
  - say: hello_16k.wav
  - wait_for: agent_done
  - hang_up
"""
VUS, ITERATIONS = 4, 8
WINDOW = 8
"""results.jsonl's order is shuffled within windows of this many calls."""
ID_SPACE = uuid.UUID("6f1d3c1e-6a53-4d5e-9a43-1b2cbd1e0c5a")


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _env(src: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(src)}


def small_run(src: Path, work: Path, record: str) -> Path:
    """A real run of the short scenario with `uvbench run` (its embedded local server); its folder."""
    scenario = work / f"scale-{record}.yaml"
    scenario.write_text(SCENARIO.format(record=record))
    out = work / f"small-{record}"
    argv = [sys.executable, "-m", "uvbench", "run", str(scenario), "--out", str(out)]
    argv += ["--vus", str(VUS), "--iterations", str(ITERATIONS), "-q"]
    done = subprocess.run(argv, cwd=src, env=_env(src), capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"uvbench run failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    return folder


def _stem_of(rel: str) -> tuple[str, str]:
    """`calls/0003-scale.timeline.json` -> ("0003-scale", ".timeline.json")."""
    name = rel.split("/", 1)[1]
    stem, _, rest = name.partition(".")
    return stem, "." + rest


def build_big(small: Path, big: Path, calls: int, seed: int = 1) -> None:
    """`calls` copies of the small run's calls under new stems (see the module doc)."""
    lines = (small / "results.jsonl").read_text().splitlines()
    sources = [json.loads(line) for line in lines]
    sources.sort(key=lambda r: r["artifacts"]["timeline"])  # call k copies the k-th stem
    (big / "calls").mkdir(parents=True)
    width = max(4, len(str(calls)))
    text: dict[int, str] = {}
    for k in range(calls):
        src = sources[k % len(sources)]
        stem = f"{k + 1:0{width}d}-scale"
        artifacts = {}
        for kind, rel in src["artifacts"].items():
            _, suffix = _stem_of(rel)
            artifacts[kind] = f"calls/{stem}{suffix}"
            shutil.copyfile(small / rel, big / artifacts[kind])
        tags = {**src["tags"], "iteration": k, "attempt": k + 1, "vu": k % VUS}
        record = {
            **src,
            "attempt": k + 1,
            "tags": tags,
            "call_id": str(uuid.uuid5(ID_SPACE, str(k))),
            "artifacts": artifacts,
        }
        (big / "calls" / f"{stem}.json").write_text(json.dumps(record, indent=2))
        text[k] = json.dumps(record)
    order = list(range(calls))
    rng = random.Random(seed)
    for start in range(0, calls, WINDOW):
        window = order[start : start + WINDOW]
        rng.shuffle(window)
        order[start : start + WINDOW] = window
    (big / "results.jsonl").write_text("".join(text[k] + "\n" for k in order))
    summary = json.loads((small / "summary.json").read_text())
    summary["calls"] = calls
    summary["passed"] = sum(1 for r in text.values() if '"passed": true' in r)
    (big / "summary.json").write_text(json.dumps(summary, indent=2))


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@dataclass
class Timed:
    src: Path
    times: list[float] = field(default_factory=list)
    """Wall-clock seconds of each run."""
    cpus: list[float] = field(default_factory=list)
    """CPU seconds of each run (its processes together)."""
    loads: list[str] = field(default_factory=list)
    """The load average before and after each run."""
    output: str = ""
    """The last run's output."""
    html: int = 0
    """The size of the report.html it wrote last, bytes."""

    def run(self, folder: Path) -> None:
        """`uvbench report folder` with the code in `src`, once."""
        argv = [sys.executable, "-m", "uvbench", "report", str(folder)]
        before = load_average()
        used = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        done = subprocess.run(
            argv, cwd=self.src, env=_env(self.src), capture_output=True, text=True, timeout=3600
        )
        self.times.append(time.perf_counter() - t0)
        now = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpus.append(now.ru_utime - used.ru_utime + now.ru_stime - used.ru_stime)
        self.loads.append(f"{before} -> {load_average()}")
        if done.returncode != 0:
            raise SystemExit(f"uvbench report failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        self.output = done.stdout + done.stderr
        self.html = (folder / "report.html").stat().st_size


def time_report(srcs: list[Path], folder: Path, runs: int) -> list[Timed]:
    """`uvbench report folder` `runs` times with the code of each of `srcs`, in alternation."""
    timed = [Timed(src) for src in srcs]
    for _ in range(runs):
        for each in timed:
            each.run(folder)
    return timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--calls", type=int, default=10_000, help="calls in the big folder (10000)")
    parser.add_argument("--runs", type=int, default=3, help="timed `uvbench report` runs per folder (3)")
    parser.add_argument("--policies", default="all,none", help="record policies to measure (all,none)")
    parser.add_argument("--src", type=Path, default=ROOT, help="uvbench source tree to run (this one)")
    parser.add_argument("--report-src", type=Path, default=None, help="source tree to report with (--src)")
    parser.add_argument(
        "--against", type=Path, default=None, help="also report with this tree, run for run in turn"
    )
    parser.add_argument("--keep", type=Path, default=None, help="build the folders here and keep them")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here too")
    args = parser.parse_args()
    src = args.src.resolve()
    report_src = (args.report_src or args.src).resolve()
    work = Path(tempfile.mkdtemp(prefix="report_scale-")) if args.keep is None else args.keep.resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"machine: nproc {len(os.sched_getaffinity(0))}, {cpu_model()}, Python {sys.version.split()[0]};"
        f" run with {src}, report with {report_src}; load average {load_average()}"
    )
    print(
        f"  uvbench run SCENARIO --out OUT --vus {VUS} --iterations {ITERATIONS} -q, then {args.calls}"
        f" calls built from it; uvbench report DIR x{args.runs} (PYTHONPATH={report_src})"
    )
    figures = []
    try:
        for policy in args.policies.split(","):
            small = small_run(src, work, policy)
            big = work / f"20261202-120000-scale-{policy}-{args.calls}"
            t0 = time.perf_counter()
            build_big(small, big, args.calls)
            built_s = time.perf_counter() - t0
            size = folder_bytes(big)
            timelines = sum(p.stat().st_size for p in (big / "calls").glob("*.timeline.json"))
            results = (big / "results.jsonl").read_bytes()
            srcs = [report_src] + ([args.against.resolve()] if args.against else [])
            print(
                f"record: {policy}: {args.calls} calls, folder {size / 1e6:.1f} MB (timelines"
                f" {timelines / 1e6:.1f} MB), built in {built_s:.0f} s"
            )
            timings = time_report(srcs, big, args.runs)
            # Byte for byte after every run (alone; in alternation the other code may reorder it).
            same = (big / "results.jsonl").read_bytes() == results if not args.against else None
            for timed in timings:
                times, cpus, html = timed.times, timed.cpus, timed.html
                figures.append(
                    {
                        "record": policy,
                        "calls": args.calls,
                        "report_src": str(timed.src),
                        "folder_bytes": size,
                        "timeline_bytes": timelines,
                        "report_html_bytes": html,
                        "times_s": [round(t, 2) for t in times],
                        "cpu_s": [round(t, 2) for t in cpus],
                        "best_s": round(min(times), 2),
                        "median_s": round(statistics.median(times), 2),
                        "results_jsonl_unchanged": same,
                        "load_average": timed.loads,
                        "build_s": round(built_s, 1),
                    }
                )
                print(
                    f"  uvbench report with {timed.src}: best {min(times):.2f} s, median"
                    f" {statistics.median(times):.2f} s ({', '.join(f'{t:.2f}' for t in times)};"
                    f" CPU {', '.join(f'{c:.1f}' for c in cpus)} s); report.html {html / 1e6:.2f} MB"
                )
                for load in timed.loads:
                    print(f"    load average {load}")
                last = [line for line in timed.output.splitlines() if line.strip()][-1:]
                print(f"    {last[0] if last else ''}")
            if same is not None:
                print(f"  results.jsonl {'unchanged' if same else 'CHANGED'} (byte for byte, after the runs)")
            if args.keep is None:
                shutil.rmtree(big)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
