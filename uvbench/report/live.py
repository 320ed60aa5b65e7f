"""The live view of a run: a progress bar and a small table, refreshed a few times a second.

Only on a terminal. When stdout is not a TTY (a CI log) a progress line is printed every
`progress_every_s` instead, as k6 and locust print theirs; with `--quiet`, neither. It reads the
runner's `RunState` and never touches a call, so drawing cannot slow the pacers beyond a short
render each refresh.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import numpy as np
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from uvbench.metrics.aggregate import UNDERFLOW_MIN_AUDIO_S
from uvbench.runner.fanout import RunState


def _p(values: list[float], q: float) -> str:
    return "—" if not values else f"{np.percentile(values, q):.0f} ms"


def clock(seconds: float) -> str:
    """h:mm:ss of the run so far."""
    minutes, secs = divmod(max(0, int(seconds)), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


class LiveView:
    def __init__(
        self,
        state: RunState,
        *,
        total_calls: int | None,
        duration_s: float | None,
        enabled: bool,
        progress_every_s: float | None = 10.0,
    ) -> None:
        self.state = state
        self.enabled = enabled and sys.stdout.isatty()
        self.progress_every_s = progress_every_s if enabled and not self.enabled else None
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self.console = Console()
        # The bar says what it counts: calls done of a number of calls, or seconds of a load's
        # duration. The clock is the run's own (RunState), not the bar's: rich stops a task's clock
        # when its bar is full, which a duration's bar is while the last calls drain.
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:.0f}/{task.total:.0f}" + ("" if total_calls else " s")),
            TextColumn("{task.fields[clock]}"),
            TextColumn("{task.fields[draining]}"),
            console=self.console,
        )
        self.total_calls = total_calls
        self.duration_s = duration_s
        self.task = self.progress.add_task(
            "calls" if total_calls else "time",
            total=total_calls or duration_s or 0,
            clock=clock(0),
            draining="",
        )
        self._live: Live | None = None

    def table(self) -> Table:
        s = self.state
        table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        for column in ("active", "done", "completed", "failed", "invalid", "dropped", "ttfa p50", "ttfa p95",
                       "underflows/min", "pacer p99 (worst)"):  # fmt: skip
            table.add_column(column, justify="right")
        minutes = s.agent_audio_ms / 60000
        # no per-minute figure from a few seconds of audio, as in the summary (aggregate.py)
        few = s.agent_audio_ms < UNDERFLOW_MIN_AUDIO_S * 1000
        table.add_row(
            str(s.in_flight),
            str(s.finished),
            str(s.count("completed")),
            str(s.count("failed:")),
            str(s.count("invalid:")),
            str(s.dropped),
            _p(s.ttfa_ms, 50),
            _p(s.ttfa_ms, 95),
            "—" if few else f"{s.underflows / minutes:.2f}",
            f"{s.worst_pacer_p99_ms:.1f} ms",
        )
        return table

    def progress_line(self) -> str:
        """One line of where the run is, for logs: k6's `running (1m10s), ...` with the pacer's health."""
        s = self.state
        minutes, seconds = divmod(int(s.elapsed_s()), 60)
        of = f"/{self.total_calls}" if self.total_calls else ""
        line = (
            f"running ({minutes}m{seconds:02d}s), {s.in_flight} calls in flight, {s.finished}{of} done"
            f" ({s.count('completed')} completed, {s.count('failed:')} failed, {s.count('invalid:')} invalid)"
        )
        if s.dropped or s.interrupted:
            line += f", {s.dropped} dropped, {s.interrupted} interrupted"
        if s.ttfa_ms:
            line += f"; ttfa p50 {_p(s.ttfa_ms, 50)}, p95 {_p(s.ttfa_ms, 95)}"
        return line + f"; pacer p99 (worst call) {s.worst_pacer_p99_ms:.1f} ms"

    def _tick(self) -> None:
        assert self.progress_every_s is not None
        while not self._stop.wait(self.progress_every_s):
            if not self.state.started:  # the processes are still starting: no clock to show yet
                continue
            try:
                print(self.progress_line(), flush=True)
            except (OSError, ValueError):  # the log's reader went away: the run goes on without lines
                return

    def render(self) -> Any:
        s = self.state
        elapsed = max(0.0, s.elapsed_s()) if s.started else 0.0
        if self.total_calls:
            completed: float = s.finished
            draining = ""
        else:
            completed = min(elapsed, self.duration_s or 0)
            over = self.duration_s is not None and elapsed >= self.duration_s and s.in_flight
            draining = f"(load over: waiting for {s.in_flight} calls to end)" if over else ""
        self.progress.update(self.task, completed=completed, clock=clock(elapsed), draining=draining)
        return Group(self.progress, self.table())

    def print(self, text: str) -> None:
        """Print above the live view (per-call summaries). Called from the run's loop: a reader of
        stdout that went away (`| head`) must not stop the calls, so that is left to the end."""
        try:
            if self._live is not None:
                self._live.console.print(text, highlight=False, markup=False)
            else:
                print(text, flush=True)
        except (OSError, ValueError):
            pass

    def __enter__(self) -> LiveView:
        if self.progress_every_s:
            self._ticker = threading.Thread(target=self._tick, name="uvbench-progress", daemon=True)
            self._ticker.start()
        if self.enabled:
            self._live = Live(
                get_renderable=self.render, console=self.console, refresh_per_second=4, transient=False
            )
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._ticker is not None:
            self._stop.set()
            self._ticker.join()
            self._ticker = None
        if self._live is not None:
            self._live.__exit__(*exc)
            self._live = None
