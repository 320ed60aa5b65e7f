"""Run history: every finished run's figures in one SQLite file, `reports/history.sqlite`.

The database sits beside the run folders (the parent of a run folder, i.e. `run --out`). Each run
is one row of `runs`, keyed by its folder name, and many rows of `figures`, one per
(scenario, metric, stat): for each metric of `aggregate`, `p50 p95 p99 mean count`; for each rate
of `aggregate.RATES`, `value` (the `_rate` ones as `<name>_pct` in percent, like `compare`:
`call.success_pct`, `turn.miss_pct`, ...; `audio.underflow_per_min` as it is); and `calls` with
`total valid invalid completed`. Scenario `""` (`OVERALL`) holds the whole run's figures.

Writing a run again (`uvbench report DIR` rebuilds a folder) replaces its rows: an upsert by run id,
in one transaction. Several runs finishing at once are safe: each write takes SQLite's write lock
up front (BEGIN IMMEDIATE) and waits up to `TIMEOUT_S` for another writer to finish.

The schema is versioned: `meta` holds `schema_version` (`SCHEMA_VERSION`); a database written by a
newer uvbench is refused rather than misread. Metadata is git-free: the run id (folder name), the
run's name (the folder name without its time stamp), when it started (from the folder name), its
target(s) and its load profile: what the records tell (calls, VUs, peak concurrency, stages) and
summary.json's `load` when the runner wrote one.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
from collections.abc import Iterable, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

from uvbench.metrics.aggregate import RATES, Aggregate, aggregate

SCHEMA_VERSION = 1
DB_NAME = "history.sqlite"
OVERALL = ""
"""The `scenario` of the whole run's figures."""
TIMEOUT_S = 30.0
STATS = ("p50", "p95", "p99", "mean", "count")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,      -- the run folder's name
    name TEXT NOT NULL,           -- the run's name (folder name without the time stamp)
    started TEXT NOT NULL,        -- ISO 8601, local time, to the second
    target TEXT,                  -- the targets' labels, comma-separated
    profile TEXT,                 -- JSON: calls, vus, max_concurrency, stages
    calls INTEGER NOT NULL,
    folder TEXT,                  -- the run folder as last written from
    recorded TEXT NOT NULL        -- when these rows were written (ISO 8601)
);
CREATE INDEX IF NOT EXISTS runs_by_name ON runs (name, started);
CREATE TABLE IF NOT EXISTS figures (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    scenario TEXT NOT NULL,       -- '' for the whole run
    metric TEXT NOT NULL,
    stat TEXT NOT NULL,           -- p50 p95 p99 mean count | value (rates) | total valid ... (calls)
    value REAL,
    PRIMARY KEY (run_id, scenario, metric, stat)
);
"""

_STAMP = re.compile(r"^(\d{8}-\d{6})(?:-(.*))?$")


class HistoryError(Exception):
    """The history database cannot be used (newer schema, not a uvbench history file)."""


def db_for(run_folder: Path) -> Path:
    """Where a run folder's history goes: `history.sqlite` beside it."""
    return Path(run_folder).parent / DB_NAME


def rate_metric(rate: str) -> str:
    """The history (and compare) name of a rate: `call.success_rate` -> `call.success_pct`."""
    return rate.removesuffix("_rate") + "_pct" if rate.endswith("_rate") else rate


RATE_METRICS = tuple(rate_metric(r) for r in RATES)


def run_meta(folder: Path, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """run_id, name, started, target, profile of a run folder, from its name and its records."""
    folder = Path(folder)
    match = _STAMP.match(folder.name)
    if match:
        started = dt.datetime.strptime(match.group(1), "%Y%m%d-%H%M%S").isoformat()
        name = match.group(2) or folder.name
    else:
        try:
            mtime = (folder / "results.jsonl").stat().st_mtime
        except OSError:
            mtime = dt.datetime.now().timestamp()
        started = dt.datetime.fromtimestamp(mtime).replace(microsecond=0).isoformat()
        name = folder.name
    targets = sorted({str(r.get("target")) for r in records if r.get("target") is not None})
    tags = [r.get("tags") or {} for r in records]
    vus = [t["vu"] for t in tags if isinstance(t.get("vu"), int)]
    concurrency = [c for c in (r.get("concurrency") for r in records) if isinstance(c, int)]
    stages = {t.get("stage") for t in tags if t.get("stage") is not None}
    profile = {
        "calls": len(records),
        "vus": max(vus) + 1 if vus else None,
        "max_concurrency": max(concurrency) if concurrency else None,
        "stages": len(stages) or None,
        "scenarios": len({r.get("scenario") for r in records}),
    }
    try:  # the load the run was given, when the runner wrote it (summary.json's `load`)
        load = json.loads((folder / "summary.json").read_text(encoding="utf-8")).get("load")
    except (OSError, ValueError, AttributeError):
        load = None
    if load is not None:
        profile["load"] = load
    return {
        "run_id": folder.name,
        "name": name,
        "started": started,
        "target": ",".join(targets) or None,
        "profile": profile,
    }


def figures(agg: Aggregate) -> dict[tuple[str, str], float]:
    """(metric, stat) -> value of one aggregate (None values left out)."""
    out: dict[tuple[str, str], float] = {
        ("calls", "total"): agg.calls,
        ("calls", "valid"): agg.valid,
        ("calls", "invalid"): agg.invalid,
        ("calls", "completed"): agg.completed,
    }
    for name, stats in agg.metrics.items():
        for stat in STATS:
            value = getattr(stats, stat)
            if value is not None:
                out[(name, stat)] = float(value)
    for key, rate in agg.rates.items():
        value = rate.value
        if value is not None:
            out[(rate_metric(key), "value")] = 100 * value if key.endswith("_rate") else value
    return out


def run_figures(
    records: Sequence[dict[str, Any]], overall: Aggregate | None = None
) -> dict[str, dict[tuple[str, str], float]]:
    """Scenario (OVERALL for the whole run) -> its figures. `overall`, the records'
    `aggregate(records, by="scenario")` when the caller has it, saves computing it again."""
    if overall is None:
        overall = aggregate(records, by="scenario")
    out = {OVERALL: figures(overall)}
    for scenario, group in overall.groups.items():
        out[str(scenario)] = figures(group)
    return out


def _connect(db: Path, *, create: bool) -> sqlite3.Connection:
    if create:
        db.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(db, timeout=TIMEOUT_S, isolation_level=None)
    else:
        if not db.is_file():
            raise FileNotFoundError(db)
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=TIMEOUT_S)
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def _check_version(conn: sqlite3.Connection, db: Path) -> int | None:
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.DatabaseError as exc:
        if "no such table" in str(exc):
            return None
        raise HistoryError(f"{db}: not a uvbench history database ({exc})") from None
    if row is None:
        return None
    version = int(row[0])
    if version > SCHEMA_VERSION:
        raise HistoryError(
            f"{db}: schema version {version} is newer than this uvbench's ({SCHEMA_VERSION}); upgrade uvbench"
        )
    return version


def record_run(
    db: Path,
    folder: Path,
    records: Sequence[dict[str, Any]],
    *,
    meta: dict[str, Any] | None = None,
    overall: Aggregate | None = None,
) -> str:
    """Write (or replace) the run's rows in `db`; returns the run id. `meta` overrides `run_meta`;
    `overall` is the records' `aggregate(records, by="scenario")` when the caller has it."""
    db = Path(db)
    info = {**run_meta(folder, records), **(meta or {})}
    per_scope = run_figures(records, overall)
    now = dt.datetime.now().replace(microsecond=0).isoformat()
    with closing(_connect(db, create=True)) as conn:
        conn.execute("BEGIN IMMEDIATE")  # the write lock now: concurrent runs queue here
        try:
            version = _check_version(conn, db)
            if version is None:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            run_id = info["run_id"]
            conn.execute("DELETE FROM figures WHERE run_id = ?", (run_id,))
            conn.execute(
                "INSERT OR REPLACE INTO runs"
                " (run_id, name, started, target, profile, calls, folder, recorded)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    info["name"],
                    info["started"],
                    info["target"],
                    json.dumps(info["profile"]),
                    len(records),
                    str(folder),
                    now,
                ),
            )
            conn.executemany(
                "INSERT INTO figures (run_id, scenario, metric, stat, value) VALUES (?, ?, ?, ?, ?)",
                [
                    (run_id, scope, metric, stat, value)
                    for scope, values in per_scope.items()
                    for (metric, stat), value in values.items()
                ],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return run_id


def record_finished_run(
    folder: Path, records: Sequence[dict[str, Any]], overall: Aggregate | None = None
) -> str | None:
    """`record_run` into `db_for(folder)`, never raising: a warning line when the history could not
    be written (the run's own files are what matters)."""
    db = db_for(folder)
    try:
        record_run(db, folder, records, overall=overall)
    except (OSError, sqlite3.Error, HistoryError, ValueError) as exc:
        return f"run history not updated ({db}): {exc}"
    return None


def _open_for_reading(db: Path) -> sqlite3.Connection:
    conn = _connect(Path(db), create=False)
    if _check_version(conn, Path(db)) is None:
        conn.close()
        raise HistoryError(f"{db}: not a uvbench history database (no schema_version)")
    return conn


def history_points(
    db: Path | str,
    name: str | None = None,
    metric: str | Iterable[str] = "turn.ttfa_ms",
    stat: str | Iterable[str] = "p95",
    limit: int | None = 20,
    *,
    scenario: str | None = None,
) -> list[dict[str, Any]]:
    """The last `limit` runs (all of them when None) with the figure, oldest first, newest last:
    `[{"run": run id, "started": ISO time, "metrics": {"turn.ttfa_ms.p95": 812.0, ...}}]`.

    `name` keeps the runs of that name; `scenario` reads that scenario's figures instead of the
    whole run's. `metric` and `stat` may be lists (every combination is a key of "metrics"); a rate
    (`RATE_METRICS`, e.g. `call.success_pct`) has only `value`, whatever stat is asked. Runs that
    have none of the asked figures are left out. FileNotFoundError when `db` does not exist."""
    metrics = [metric] if isinstance(metric, str) else list(metric)
    stats = [stat] if isinstance(stat, str) else list(stat)
    wanted: dict[tuple[str, str], str] = {}
    for m in metrics:
        for s in ["value"] if m in RATE_METRICS else stats:
            wanted[(m, s)] = f"{m}.{s}"
    if not wanted:
        return []
    pairs = " OR ".join("(f.metric = ? AND f.stat = ?)" for _ in wanted)
    params: list[Any] = [scenario or OVERALL, *[x for pair in wanted for x in pair]]
    where_name = ""
    if name is not None:
        where_name = " AND r.name = ?"
        params.append(name)
    sql = (
        "SELECT r.run_id, r.started FROM runs r WHERE EXISTS (SELECT 1 FROM figures f"
        f" WHERE f.run_id = r.run_id AND f.scenario = ? AND ({pairs})){where_name}"
        " ORDER BY r.started DESC, r.run_id DESC"
    )
    if limit is not None:
        sql += " LIMIT ?"
        params.append(int(limit))
    with closing(_open_for_reading(Path(db))) as conn:
        runs = conn.execute(sql, params).fetchall()[::-1]
        points = []
        for run_id, started in runs:
            rows = conn.execute(
                "SELECT metric, stat, value FROM figures WHERE run_id = ? AND scenario = ?",
                (run_id, scenario or OVERALL),
            ).fetchall()
            values = {(m, s): v for m, s, v in rows if (m, s) in wanted and v is not None}
            points.append(
                {
                    "run": run_id,
                    "started": started,
                    "metrics": {wanted[k]: values[k] for k in wanted if k in values},
                }
            )
    return points


def run_names(db: Path | str) -> list[str]:
    """Every run name in the database, most recent run first."""
    with closing(_open_for_reading(Path(db))) as conn:
        rows = conn.execute("SELECT name, MAX(started) AS last FROM runs GROUP BY name ORDER BY last DESC")
        return [row[0] for row in rows]


def known_metrics(db: Path | str) -> list[str]:
    """Every metric with figures in the database."""
    with closing(_open_for_reading(Path(db))) as conn:
        return [row[0] for row in conn.execute("SELECT DISTINCT metric FROM figures ORDER BY metric")]


def known_stats(db: Path | str, metric: str) -> list[str]:
    with closing(_open_for_reading(Path(db))) as conn:
        rows = conn.execute("SELECT DISTINCT stat FROM figures WHERE metric = ? ORDER BY stat", (metric,))
        return [row[0] for row in rows]


def history_for_run(
    folder: Path,
    metric: str | Iterable[str] = "turn.ttfa_ms",
    stat: str | Iterable[str] = "p95",
    limit: int = 20,
) -> list[dict[str, Any]] | None:
    """`history_points` of the runs named like the run folder `folder` (itself included once it is
    recorded), from `db_for(folder)`; None when there is no readable history. For report pages."""
    name = run_meta(Path(folder), [])["name"]
    try:
        return history_points(db_for(folder), name, metric, stat, limit)
    except (OSError, sqlite3.Error, HistoryError):
        return None
