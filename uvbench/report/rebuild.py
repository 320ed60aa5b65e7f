"""`uvbench report DIR`: recompute a saved run's figures from its timelines and rewrite its reports.

Metrics are a pure function of a call's timeline, so a run folder can be re-analysed after a metric
is fixed. For each call (`calls/<stem>.json`) the figures, outcome and anchors are recomputed from
`calls/<stem>.timeline.json`; everything else of the record is kept, expectations included (checking
them again needs the live transcripts: their stored results stand, and a failed one fails the call
as in `uvbench.runner.run`), run-wide tags too. Then `results.jsonl` and every call JSON are
rewritten, and `calls.csv`, `stats.csv` and `junit.xml` are written into the folder, dated and timed by
summary.json's `run` object (left as it is: the run's start and length are not in the timelines).

results.jsonl keeps its own order (the order calls finished in, which is not their files' order
when several processes measured them): each record goes where the line of its timeline artifact
was; calls found only in calls/ come after, in file order. So an unchanged run folder rebuilds to
the same results.jsonl, byte for byte. A call JSON whose content is already the rebuilt record is
left as it is (no write); the others are rewritten as the run writes them (`json.dumps(indent=2)`).

Big runs: the calls are recomputed by this process and a pool of others, one per core in all
(`jobs`), when there are `POOL_MIN_CALLS` or more; each reads its calls' files, recomputes, rewrites
a call JSON that changed and hands back the record and its line (this process's share needs no
handing over: it takes a batch whenever the pool has enough ahead). The cyclic garbage
collector is paused meanwhile (`gc_paused`): ten thousand records are millions of objects it would
walk again and again.

A call whose timeline is missing or unreadable keeps its stored record; a warning says so.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from uvbench.call.timeline import Timeline
from uvbench.metrics import compute
from uvbench.metrics.call import expectation_failed
from uvbench.report.csv_report import calls_csv, calls_csv_line, stats_csv
from uvbench.report.junit import Case, junit_xml, testcase
from uvbench.report.run_folder import (
    compact_json,
    generator_failures,
    load_timeline,
    read_bytes,
    record_json,
    run_start,
    write_lines,
    write_text,
)

RECOMPUTED = ("metrics", "set_apart", "turns", "barge_ins", "underflows", "anchors", "ping_rtts_ms")
"""Record keys replaced by the recomputed figures (plus outcome, outcome_detail, passed,
duration_ms and end_reason, which derive from them)."""
TIMELINE_SUFFIX = ".timeline.json"
POOL_MIN_CALLS = 200
"""Fewer calls than this are recomputed in this process (a pool's start costs more than it saves)."""
BATCH = 32
"""Calls per task sent to a pool process."""
AHEAD = 2
"""Batches sent to each pool process ahead of the one it works on."""
UNREPORTED = ("api_messages", "ground_truth")
"""Record keys no report reads: left out of `RebuildResult.records` with `light=True` (they stay in
the files); a record without them pickles 40 % smaller, in half the time, for ten thousand records
handed from the pool's processes to this one."""


class Tables(NamedTuple):
    """Each record's row of calls.csv (`calls_csv_line`, dated by summary.json's `run.started_at`)
    and testcase of junit.xml (`testcase`; None: junit_xml makes it), in the records' order:
    `calls_csv(records, lines=...)`, `junit_xml(records, cases=...)`."""

    csv_lines: list[str]
    cases: list[Case | None]


@dataclass
class RebuildResult:
    records: list[dict[str, Any]]
    """Every call's record, as rewritten, in results.jsonl's order (see the module doc); without
    the `UNREPORTED` keys when rebuilt with `light=True`."""
    warnings: list[str] = field(default_factory=list)
    """Calls that kept their stored record (timeline missing or corrupt) or could not be read."""
    first_wall_ns: int | None = None
    """The wall clock at the start of the earliest timeline read (None when none was)."""
    tables: Tables | None = None
    """The records' rows of calls.csv and testcases of junit.xml, with `tables=True`."""


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off for a while: reading ten thousand records makes millions of
    objects, and the collector would walk them all again and again (records hold no cycles)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _call_files(run_dir: Path) -> list[Path]:
    calls = run_dir / "calls"
    if not calls.is_dir():
        return []
    with os.scandir(calls) as entries:  # the file type comes with the listing: no stat per file
        names = [
            e.name
            for e in entries
            if e.name.endswith(".json") and not e.name.endswith(TIMELINE_SUFFIX) and e.is_file()
        ]
    return [calls / name for name in sorted(names)]


def _timeline_path(run_dir: Path, call_file: Path, record: dict[str, Any]) -> Path:
    stored = (record.get("artifacts") or {}).get("timeline")
    if isinstance(stored, str) and stored:
        return run_dir / stored
    return call_file.with_name(call_file.name[: -len(".json")] + TIMELINE_SUFFIX)


def _stored_expect_failure(record: dict[str, Any]) -> tuple[str, str] | None:
    return expectation_failed(e for e in record.get("expectations") or [] if isinstance(e, dict))


def recompute_record(record: dict[str, Any], timeline: Timeline) -> dict[str, Any]:
    """The record with its figures and outcome recomputed from `timeline` (a new dict)."""
    m = compute(timeline).to_json()
    out = dict(record)
    for key in RECOMPUTED:
        out[key] = m[key]
    outcome, detail = m["outcome"], m["outcome_detail"]
    # The run records each checked expectation in the timeline (`expect.checked`), so compute() sees
    # a failed one; a timeline without those events still fails on the stored results.
    if outcome == "completed" and not timeline.of_kind("expect.checked"):
        failed = _stored_expect_failure(record)
        if failed is not None:
            outcome, detail = failed
            out["metrics"]["call.outcome"] = outcome
    out["outcome"] = outcome
    out["outcome_detail"] = detail
    out["passed"] = outcome == "completed"
    out["duration_ms"] = out["metrics"].get("call.duration_ms")
    out["end_reason"] = out["metrics"].get("call.end_reason")
    return out


# ------------------------------------------------------------------------------------------------
# results.jsonl as it stands: its order, and its lines as a fallback


_DECODER = json.JSONDecoder()
_ARTIFACTS = b'"artifacts": '


def _timeline_of(record: Any) -> str | None:
    artifacts = record.get("artifacts") if isinstance(record, dict) else None
    timeline = artifacts.get("timeline") if isinstance(artifacts, dict) else None
    return timeline if isinstance(timeline, str) else None


def _line_timeline(data: bytes, start: int, end: int) -> str | None:
    """The timeline artifact of the results.jsonl line `data[start:end]` (None when it has none or
    is not JSON).

    The record's last key is its `artifacts`, so that small object is all there is to parse: found
    as the last `"artifacts": ` of the line (the text cannot stand inside a JSON string, whose
    quotes are escaped) and taken only when the line's object closes right after it, so it is the
    record's own; any other line is parsed whole."""
    at = data.rfind(_ARTIFACTS, start, end)
    if at >= 0:
        tail = data[at + len(_ARTIFACTS) : end].decode("utf-8", "replace")
        try:
            artifacts, stop = _DECODER.raw_decode(tail)
        except ValueError:
            pass
        else:
            if tail[stop:].strip() == "}":
                return _timeline_of({"artifacts": artifacts})
    try:
        return _timeline_of(json.loads(data[start:end]))
    except ValueError:
        return None


class _Stored(NamedTuple):
    data: bytes
    """results.jsonl as it was."""
    lines: list[tuple[int, int]]
    """Where each of its lines starts and ends in `data` (no line break)."""
    position: dict[str, int]
    """Each timeline artifact's first line."""

    def line(self, n: int) -> bytes:
        start, end = self.lines[n]
        return self.data[start:end]


def _stored_results(run_dir: Path) -> _Stored:
    try:
        data = read_bytes(run_dir / "results.jsonl")
    except OSError:
        return _Stored(b"", [], {})
    lines: list[tuple[int, int]] = []
    position: dict[str, int] = {}
    start, size = 0, len(data)
    while start < size:
        end = data.find(b"\n", start)
        if end < 0:
            end = size
        stop = end - 1 if end > start and data[end - 1] == 13 else end  # a CRLF line
        n = len(lines)
        lines.append((start, stop))
        timeline = _line_timeline(data, start, stop)
        if timeline is not None:
            position.setdefault(timeline, n)
        start = end + 1
    return _Stored(data, lines, position)


def _fallback(stored: _Stored, call_file: Path) -> dict[str, Any] | None:
    """results.jsonl's record of the call: the stand-in for an unreadable call JSON."""
    stem = call_file.name[: -len(".json")]
    n = stored.position.get(f"calls/{stem}{TIMELINE_SUFFIX}")
    if n is None:
        return None
    try:
        record = json.loads(stored.line(n))
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


# ------------------------------------------------------------------------------------------------
# One call


class _Options(NamedTuple):
    light: bool = False
    """Leave the `UNREPORTED` keys out of the records handed back."""
    tables: bool = False
    """Make each call's row of calls.csv and testcase of junit.xml too."""
    start: dt.datetime | None = None
    """The run's start (summary.json's `run.started_at`), which dates each call's row of calls.csv."""


_PLAIN = _Options()


class _Done(NamedTuple):
    index: int
    """The call file's position in calls/."""
    record: dict[str, Any] | None
    """The rebuilt record; None when the call JSON could not be read (`warning` says why)."""
    line: str | None
    """The record's line of results.jsonl (without its newline)."""
    wall_epoch_ns: int | None
    """Its timeline's wall clock at the start; None when the timeline could not be read."""
    warning: str | None
    csv_line: str | None = None
    case: Case | None = None


def _rebuild_call(
    run_dir: Path,
    index: int,
    call_file: Path,
    stored: dict[str, Any] | None = None,
    options: _Options = _PLAIN,
) -> _Done:
    """Recompute one call from its timeline and rewrite its call JSON if that changed. `stored`
    stands in for a call JSON that cannot be read; `options` say what to hand back."""
    text: str | None = None
    if stored is None:
        try:
            text = read_bytes(call_file).decode("utf-8")
            record = json.loads(text)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:
            return _Done(index, None, None, None, f"{exc}")
    else:
        record = stored
    timeline_path = _timeline_path(run_dir, call_file, record)
    warning = None
    wall_ns = None
    try:
        timeline = load_timeline(timeline_path)
        rebuilt = recompute_record(record, timeline)
        wall_ns = timeline.wall_epoch_ns
    except FileNotFoundError:
        rel = call_file.relative_to(run_dir).as_posix()
        warning = f"{rel}: its timeline {timeline_path.name} is missing; kept the stored figures"
        rebuilt = record
    except Exception as exc:  # a corrupt timeline: any error reading or replaying it
        rel = call_file.relative_to(run_dir).as_posix()
        warning = (
            f"{rel}: its timeline {timeline_path.name} is unreadable ({type(exc).__name__}: {exc});"
            " kept the stored figures"
        )
        rebuilt = record
    line = json.dumps(rebuilt)
    if text is None or compact_json(text) != line:
        write_text(call_file, record_json(rebuilt))
    if options.light:
        rebuilt = {k: v for k, v in rebuilt.items() if k not in UNREPORTED}
    if options.tables:  # a testcase named by its position in the run is made later, by junit_xml
        row = calls_csv_line(rebuilt, options.start)
        return _Done(index, rebuilt, line, wall_ns, warning, row, testcase(rebuilt, None))
    return _Done(index, rebuilt, line, wall_ns, warning)


def _rebuild_batch(run_dir: Path, batch: list[tuple[int, Path]], options: _Options) -> list[_Done]:
    with gc_paused():
        return [_rebuild_call(run_dir, index, call_file, options=options) for index, call_file in batch]


def _default_sigterm() -> None:
    """In a pool worker: SIGTERM ends it quietly. The pool stops its workers with SIGTERM on the way
    out, and the CLI's handler (raising `Terminated`, a clean stop of the run) is not theirs."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _pool_context() -> Any:
    """fork where it is safe (Linux, no other thread in this process: the workers start at once
    with everything imported), else spawn."""
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def default_jobs() -> int:
    """Processes to recompute calls with: one per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _rebuild_all(
    run_dir: Path,
    call_files: list[Path],
    jobs: int,
    options: _Options,
    meanwhile: Callable[[], Any] | None,
) -> list[_Done]:
    numbered = list(enumerate(call_files))
    if jobs <= 1 or len(numbered) < POOL_MIN_CALLS:
        done = _rebuild_batch(run_dir, numbered, options)
        if meanwhile is not None:
            meanwhile()
        return done
    batches = [numbered[k : k + BATCH] for k in range(0, len(numbered), BATCH)]
    done = []
    failed: list[BaseException] = []

    def helper_work() -> None:
        try:
            if meanwhile is not None:
                meanwhile()
        except BaseException as exc:  # raised again below, in this process's own thread
            failed.append(exc)

    parts: list[list[_Done] | None] = [None] * len(batches)
    lock = threading.Lock()
    taken = 0
    out = 0
    idle = threading.Event()

    def take() -> int | None:
        nonlocal taken
        with lock:
            if taken == len(batches):
                return None
            taken += 1
            return taken - 1

    with _pool_context().Pool(jobs - 1, initializer=_default_sigterm) as pool:

        def send() -> None:  # a batch to the pool; when it is back, the next one
            nonlocal out
            k = take()
            if k is None:
                return
            with lock:
                out += 1
            pool.apply_async(
                _rebuild_part,
                ((run_dir, batches[k], options),),
                callback=lambda part, k=k: back(k, part),
                error_callback=lambda exc: back(-1, exc),
            )

        def back(k: int, part: Any) -> None:  # in the pool's result thread
            nonlocal out
            if k < 0:
                failed.append(part)
            else:
                parts[k] = part
                send()
            with lock:
                out -= 1
                if out == 0:
                    idle.set()

        for _ in range(AHEAD * (jobs - 1)):
            send()
        # The pool's processes exist now: another thread may start (a fork must not copy one).
        helper = threading.Thread(target=helper_work, daemon=True)
        helper.start()
        # This process takes batches too (its records need no handing over), as many as the pool
        # leaves it.
        while (k := take()) is not None:
            parts[k] = _rebuild_batch(run_dir, batches[k], options)
        with lock:
            if out == 0:
                idle.set()
        idle.wait()
        helper.join()
    if failed:
        raise failed[0]
    return [d for part in parts for d in part or ()]


def _rebuild_part(task: tuple[Path, list[tuple[int, Path]], _Options]) -> list[_Done]:
    return _rebuild_batch(*task)


# ------------------------------------------------------------------------------------------------
# The run


def rebuild(
    run_dir: Path | str,
    *,
    jobs: int | None = None,
    reports: bool = True,
    light: bool = False,
    tables: bool = False,
    meanwhile: Callable[[], Any] | None = None,
) -> RebuildResult:
    """Recompute every call of the run folder `run_dir` and rewrite its files (see the module doc).

    `jobs`: processes to recompute with (default: one per core). `reports=False` leaves calls.csv,
    stats.csv and junit.xml to the caller (`uvbench report` writes them with the page). `light`:
    the records returned lack the `UNREPORTED` keys. `tables`: each call's row of calls.csv and
    testcase of junit.xml are made with it, by whichever process rebuilt it (`RebuildResult.tables`,
    for `finish_run`). `meanwhile`: work for this process while the
    pool's recompute (in a thread, once the pool's processes are started; after the calls without
    a pool), e.g. importing what the page needs.
    Raises FileNotFoundError when `run_dir` has no `calls/` folder. A folder without any call record
    is left untouched (with a warning).
    """
    run_dir = Path(run_dir)
    if not (run_dir / "calls").is_dir():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no calls/ in it)")
    call_files = _call_files(run_dir)
    if not call_files:
        return RebuildResult([], [f"{run_dir}: no call records in calls/; nothing rebuilt"])
    try:
        summary = json.loads(read_bytes(run_dir / "summary.json"))
    except (OSError, ValueError):
        summary = {}
    summary = summary if isinstance(summary, dict) else {}
    run = summary.get("run") if isinstance(summary.get("run"), dict) else None
    options = _Options(light=light, tables=tables, start=run_start(run))
    with gc_paused():
        read: list[_Stored] = []

        def read_then_meanwhile() -> None:  # results.jsonl is needed only once the calls are done
            read.append(_stored_results(run_dir))
            if meanwhile is not None:
                meanwhile()

        done = _rebuild_all(
            run_dir, call_files, default_jobs() if jobs is None else jobs, options, read_then_meanwhile
        )
        (stored,) = read
        warnings: list[str] = []
        kept: list[_Done] = []
        for d in done:
            call_file = call_files[d.index]
            if d.record is None:  # the call JSON is unreadable: results.jsonl's line stands in
                rel = call_file.relative_to(run_dir).as_posix()
                fallback = _fallback(stored, call_file)
                if fallback is None:
                    warnings.append(
                        f"{rel}: unreadable call record and not in results.jsonl; left out ({d.warning})"
                    )
                    continue
                warnings.append(f"{rel}: unreadable ({d.warning}); used its line of results.jsonl")
                d = _rebuild_call(run_dir, d.index, call_file, fallback, options)
            if d.warning:
                warnings.append(d.warning)
            kept.append(d)
        last = len(stored.lines)

        def place(d: _Done) -> tuple[int, int]:
            timeline = _timeline_of(d.record)
            n = stored.position.get(timeline) if timeline is not None else None
            return (n, -1) if n is not None else (last, d.index)

        kept.sort(key=place)
        records = [d.record for d in kept if d.record is not None]
        write_lines(run_dir / "results.jsonl", [d.line for d in kept if d.line is not None])
        walls = [d.wall_epoch_ns for d in kept if d.wall_epoch_ns is not None]
        made = Tables([d.csv_line or "" for d in kept], [d.case for d in kept]) if tables else None
        result = RebuildResult(records, warnings, min(walls) if walls else None, made)
        if reports:
            write_text(run_dir / "calls.csv", calls_csv(records, run=run))
            write_text(run_dir / "stats.csv", stats_csv(records))
            first = result.first_wall_ns
            stamp = None
            if run is None and first:  # a run folder without its `run` object: its first call's start
                stamp = dt.datetime.fromtimestamp(first / 1e9).replace(microsecond=0)
            write_text(
                run_dir / "junit.xml",
                junit_xml(
                    records,
                    suite_name=f"uvbench run {run_dir.name}",
                    timestamp=stamp,
                    generator_failures=generator_failures(summary),
                    run=run,
                ),
            )
    return result
