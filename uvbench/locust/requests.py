"""A finished call's record as locust request events (CONVENTIONS 7.5), so locust's stats, web UI,
CSV and HTML show uvbench's figures.

Sans-I/O: `requests_of(record)` returns what to fire; the locust user fires it. Each event is
`request_type` from the closed set (call, turn, barge_in, tool), `name` = "<scenario>:<what>",
`response_time` = the metric in milliseconds, a typed `exception` carrying the failure's kind
when it is a failure, and `context` = call id, stage, VU, worker.

    call     <s>:setup            call.create_ms + call.join_ms (REST create, then the socket open);
                                  a failure when the call could not be created or joined
    call     <s>:first_audio      call.first_audio_ms (greeting latency)
    turn     <s>:ttfa             turn.ttfa_ms of each turn; a missed turn is a failure (its time
                                  is how long the reply was waited for)
    barge_in <s>:time_to_silence  interrupt.silence_ms of each barge-in; a failed interruption
                                  (the agent heard to the end) is a failure
    call     <s>:playback         call.underflow_ms; a failure when the audio ran dry (underflows)
    call     <s>:call             call.duration_ms; a failure when the call did not complete,
                                  with its outcome (failed:<reason>, invalid:<reason>) as the kind

An invalid call (the load generator fell behind, docs/metrics.md) gives only its `<s>:call` failure:
its latencies are not the agent's and are kept out of locust's figures, as out of uvbench's. A
figure set apart in a valid call (`uvbench.metrics.validity`: not in its `metrics` map) gives no
event either: `<s>:setup` needs both of its figures; a missed turn and a failed interruption are
still failures.
`tool` is reserved: no client-tool figure is defined yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REQUEST_TYPES = ("call", "turn", "barge_in", "tool")


class UvbenchFailure(Exception):
    """A failure as locust records it: the `kind` (an outcome, missed_turn, interrupt_failed,
    underflow) and one line of reason. Its repr is what locust's failures table shows."""

    def __init__(self, kind: str, reason: str = "") -> None:
        super().__init__(kind, reason)
        self.kind = kind
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.kind}: {self.reason}" if self.reason else self.kind

    def __repr__(self) -> str:  # locust's failures.csv `Error` column is the exception's repr
        return str(self)


@dataclass(frozen=True)
class Request:
    request_type: str
    name: str
    response_time: float
    exception: UvbenchFailure | None = None
    context: dict[str, Any] = field(default_factory=dict)


def _ms(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def context_of(record: dict[str, Any]) -> dict[str, Any]:
    tags = record.get("tags") or {}
    return {
        "call_id": record.get("call_id"),
        "scenario": record.get("scenario"),
        "stage": tags.get("stage"),
        "vu": tags.get("vu"),
        "worker": tags.get("worker"),
        "outcome": record.get("outcome"),
    }


def requests_of(record: dict[str, Any]) -> list[Request]:
    """The request events of one finished call, in the order above."""
    scenario = record.get("scenario") or "call"
    outcome = record.get("outcome") or "failed:unknown"
    metrics = record.get("metrics") or {}
    context = context_of(record)
    events: list[Request] = []

    def add(request_type: str, what: str, ms: float | None, failure: UvbenchFailure | None = None) -> None:
        events.append(Request(request_type, f"{scenario}:{what}", ms or 0.0, failure, context))

    detail = record.get("outcome_detail") or record.get("error") or ""
    valid = not outcome.startswith("invalid:")
    create, join = _ms(metrics.get("call.create_ms")), _ms(metrics.get("call.join_ms"))
    set_apart = record.get("set_apart") or {}
    created = create is not None or "call.create_ms" in set_apart
    joined = outcome not in ("failed:create", "failed:connect")
    if not joined:
        add("call", "setup", (create or 0.0) + (join or 0.0), UvbenchFailure(outcome, detail))
    elif valid and create is not None and "call.join_ms" not in set_apart:
        add("call", "setup", create + (join or 0.0))
    if valid and joined:
        first_audio = _ms(metrics.get("call.first_audio_ms"))
        if first_audio is not None:
            add("call", "first_audio", first_audio)
        for turn in record.get("turns") or []:
            if turn.get("missed"):
                waited = None
                if turn.get("window_end_ns") and turn.get("t_se_ns"):
                    waited = (turn["window_end_ns"] - turn["t_se_ns"]) / 1e6
                reason = f"no reply to turn {turn.get('index')} ({turn.get('file')})"
                add("turn", "ttfa", waited, UvbenchFailure("missed_turn", reason))
            else:
                ttfa = _ms((turn.get("metrics") or {}).get("turn.ttfa_ms"))
                if ttfa is not None:
                    add("turn", "ttfa", ttfa)
        for barge_in in record.get("barge_ins") or []:
            silence = _ms((barge_in.get("metrics") or {}).get("interrupt.silence_ms"))
            if barge_in.get("success") is False:
                reason = (
                    f"the agent was heard to the end of its utterance after barge-in {barge_in.get('index')}"
                )
                add("barge_in", "time_to_silence", silence, UvbenchFailure("interrupt_failed", reason))
            elif silence is not None:
                add("barge_in", "time_to_silence", silence)
        if created:  # no playback row for a call that never played anything
            underflow_ms = _ms(metrics.get("call.underflow_ms"))
            underflows = metrics.get("call.underflow_count") or 0
            failure = None
            if underflows:
                failure = UvbenchFailure("underflow", "agent audio ran dry while the listener played it")
            add("call", "playback", underflow_ms, failure)
    failure = None if outcome == "completed" else UvbenchFailure(outcome, detail)
    add("call", "call", _ms(record.get("duration_ms")), failure)
    return events


def stats_tables_lines(run_folder: Path, csv_prefix: str | None) -> list[str]:
    """With locust's `--csv PREFIX`, a run has two stats tables in locust's columns: what each is."""
    if not csv_prefix:
        return []
    return [
        "stats tables, both in locust's columns:",
        f"  {csv_prefix}_stats.csv: locust's own request stats of the calls' request events"
        " (setup, first_audio, ttfa, time_to_silence, playback, call; rounded percentiles)",
        f"  {run_folder / 'stats.csv'}: uvbench's, computed from the call records"
        " (setup, ttfa, clear, silence; exact percentiles; invalid calls left out)",
    ]
