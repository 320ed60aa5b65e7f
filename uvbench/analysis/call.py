"""One finished call -> its record and files: read back, figures, expectations, recordings.

`analyse_call` is what an analysis process does with each call the pacing processes hand over,
and what `runner.run.run_call_of` does in-process for a single call. Steps, in order:

1. Read the call back from the API (`read_back`): the Call object (end reason), its messages and,
   from uvbench's local server, its ground truth. Best effort: the call is measured already.
2. The figures: `uvbench.metrics.compute(timeline)`; the scenario's expectations that the script
   reached, checked against the transcripts and tool calls replayed from the timeline (the same
   messages the live script saw, in the same order) and the figures; the checks go into the
   timeline and the figures are computed again, so a saved timeline rebuilds the same record.
3. The files, through a sink (a run folder's `calls/`, or bytes to ship to another machine): the
   timeline, and by the record policy (`all`, `failed`: only calls that did not complete, `none`)
   the stereo recording (FLAC, written block by block from the agent audio file) and the
   server's own recording when the call asked for one.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from pathlib import Path
from typing import Any, Protocol

from uvbench.audio.recording import call_segments, write_recording
from uvbench.call.engine import CallResult
from uvbench.call.expect import Checked, check
from uvbench.call.live import LivePlayback, LiveState
from uvbench.call.rest import ApiRequestError, UltravoxApi
from uvbench.call.timeline import Timeline
from uvbench.metrics import CallMetrics, compute
from uvbench.metrics.call import expectation_failed, playback
from uvbench.scenario import ExpectStep, Scenario

RECORD_POLICIES = ("all", "failed", "none")
SERVER_RECORDING_WAIT_S = 5.0
READ_BACK_TRIES = 30
"""The call is read back until it says it ended: at most this many times, 0.1 s apart."""


async def read_back(api: UltravoxApi, result: CallResult) -> None:
    """The call's end reason, messages and (local server) ground truth, into `result`."""
    call_id = result.call_id
    if call_id is None:
        return
    timeline = result.timeline
    try:
        for _ in range(READ_BACK_TRIES):
            result.call = await api.read_call(call_id)
            if result.call.get("ended"):
                break
            await asyncio.sleep(0.1)
        timeline.add(
            time.monotonic_ns(),
            "call.fetched",
            end_reason=result.call.get("endReason"),
            ended=result.call.get("ended"),
        )
        result.messages = await api.messages(call_id)
        if result.plan.local:
            result.ground_truth = await api.ground_truth(call_id)
    except Exception as exc:  # reading back is best effort: the call itself is already measured
        timeline.add(time.monotonic_ns(), "warning", where="read_back", message=str(exc))


def live_of(timeline: Timeline, output_rate: int, honor_clear: bool = True) -> LiveState:
    """What the script knew at the end of the call, replayed from the messages it received:
    transcripts by ordinal and the tool calls (what expectations are checked against)."""
    live = LiveState(LivePlayback(output_rate, honor_clear))
    for event in timeline.events:
        if event.kind != "msg.in":
            continue
        m = event.data.get("message") or {}
        kind = m.get("type")
        if kind == "transcript":
            live.add_transcript(
                m.get("role"), m.get("medium"), m.get("text"), m.get("delta"), bool(m.get("final")),
                m.get("ordinal"),
            )  # fmt: skip
        elif kind == "client_tool_invocation":
            live.tool_calls.append(
                {"name": m.get("toolName"), "parameters": m.get("parameters") or {}, "at_ns": event.t_ns}
            )
    return live


def reached_expectations(scenario: Scenario, timeline: Timeline) -> list[tuple[int, Any]]:
    """(step index, expectation) of every `expect` step the script reached."""
    out: list[tuple[int, Any]] = []
    for event in timeline.of_kind("step.finished"):
        index = event.data.get("index")
        if event.data.get("kind") != "expect" or not isinstance(index, int):
            continue
        step = scenario.script[index] if 0 <= index < len(scenario.script) else None
        if isinstance(step, ExpectStep):
            out.extend((index, e) for e in step.expect)
    return out


def figures(result: CallResult, scenario: Scenario) -> tuple[CallMetrics, list[Checked]]:
    """The call's figures and its expectations checked. Each check also goes into the timeline, so
    the saved timeline computes to the same outcome (`compute` reads the checks last, as here)."""
    timeline = result.timeline
    metrics = compute(timeline)  # (which parses the raw text frames into the timeline first)
    expectations = reached_expectations(scenario, timeline)
    if not expectations:
        return metrics, []
    live = live_of(timeline, result.plan.output_rate, result.plan.honor_clear)
    checks = []
    # Stamped with the call's last moment: a check has no time of its own, and a later stamp would
    # move the end of the listener's replay (and so the figures a rebuild computes).
    at = max(e.t_ns for e in timeline.events)
    for step, expectation in expectations:
        checked = check(step, expectation, live, metrics, name=scenario.script[step].name)
        checks.append(checked)
        timeline.add(at, "expect.checked", **checked.to_json())
    failed = expectation_failed(c.to_json() for c in checks)
    if failed is not None and metrics.outcome == "completed":
        metrics.outcome, metrics.outcome_detail = failed
        metrics.metrics["call.outcome"] = metrics.outcome
    return metrics, checks


def transcripts_of(timeline: Timeline) -> list[dict[str, Any]]:
    """Both roles' transcripts by ordinal, rebuilt from the messages (text replaces, delta appends)."""
    by_ordinal: dict[Any, dict[str, Any]] = {}
    for event in timeline.messages_in("transcript"):
        m = event.data["message"]
        key = m.get("ordinal") if m.get("ordinal") is not None else f"t{event.t_ns}"
        entry = by_ordinal.setdefault(
            key,
            {
                "ordinal": m.get("ordinal"),
                "role": m.get("role"),
                "medium": m.get("medium"),
                "text": "",
                "final": False,
                "first_ns": event.t_ns,
            },
        )
        if m.get("text") is not None:
            entry["text"] = m["text"]
        elif m.get("delta"):
            entry["text"] += m["delta"]
        entry["final"] = entry["final"] or bool(m.get("final"))
        entry["last_ns"] = event.t_ns
    return sorted(by_ordinal.values(), key=lambda e: e["first_ns"])


def call_record(
    scenario: Scenario,
    target: str,
    result: CallResult,
    metrics: CallMetrics,
    checks: list[Checked],
    tags: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The call's record: a line of results.jsonl and its calls/<stem>.json (artifacts added by
    whoever writes its files)."""
    m = metrics.to_json()
    failures = [
        {"step_index": e.data.get("where"), "kind": e.data.get("reason"), "reason": e.data.get("message")}
        for e in result.timeline.of_kind("error")
    ] + [
        {"step_index": c.step, "kind": "expect", "reason": f"{c.what}: {c.detail}"}
        for c in checks
        if not c.ok
    ]
    tags = tags or {}
    return {
        "scenario": scenario.name,
        "variant": scenario.variant,
        "attempt": tags.get("attempt", 1),
        "tags": tags,
        "concurrency": tags.get("concurrency", 1),
        "stage": tags.get("stage"),
        "target": target,
        "call_id": result.call_id,
        "passed": metrics.outcome == "completed",
        "outcome": metrics.outcome,
        "outcome_detail": metrics.outcome_detail,
        "error": result.failure,
        "duration_ms": metrics.metrics.get("call.duration_ms"),
        "end_reason": metrics.metrics.get("call.end_reason"),
        **{
            k: m[k]
            for k in (
                "metrics",
                "set_apart",
                "turns",
                "barge_ins",
                "underflows",
                "false_barge_ins",
                "anchors",
                "ping_rtts_ms",
            )
            if k in m
        },
        "expectations": [c.to_json() for c in checks],
        "failures": failures,
        "transcripts": transcripts_of(result.timeline),
        "config": {
            "call": scenario.call,
            "client": scenario.client.model_dump(),
            "prior_call_id": scenario.prior_call_id,
            "source": scenario.source,
        },
        "api_messages": result.messages,
        "ground_truth": result.ground_truth,
    }


def keeps_recording(policy: str, outcome: str) -> bool:
    return policy == "all" or (policy == "failed" and outcome != "completed")


# ------------------------------------------------------------------------------------------------
# Where the files go


class Sink(Protocol):
    """Where a call's files go; each method returns the file's path relative to the run folder."""

    def put_text(self, suffix: str, text: str) -> str: ...

    def put_recording(self, suffix: str, write: Any) -> str: ...

    async def put_download(self, suffix: str, api: UltravoxApi, call_id: str) -> str: ...


class FolderSink:
    """Straight into a run folder's calls/ as `<stem><suffix>`."""

    def __init__(self, calls_dir: Path, stem: str) -> None:
        self.calls_dir = calls_dir
        self.stem = stem

    def _path(self, suffix: str) -> tuple[Path, str]:
        name = f"{self.stem}{suffix}"
        return self.calls_dir / name, f"calls/{name}"

    def put_text(self, suffix: str, text: str) -> str:
        path, rel = self._path(suffix)
        path.write_text(text, encoding="utf-8")
        return rel

    def put_recording(self, suffix: str, write: Any) -> str:
        path, rel = self._path(suffix)
        write(path)
        return rel

    async def put_download(self, suffix: str, api: UltravoxApi, call_id: str) -> str:
        path, rel = self._path(suffix)
        deadline = time.monotonic() + SERVER_RECORDING_WAIT_S
        while True:  # streamed to the file; 425 means the server has not finished it yet
            try:
                await api.save_recording(call_id, path)
                return rel
            except ApiRequestError as exc:
                if exc.status != 425 or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.1)


class BytesSink:
    """Kept in memory as `files[suffix] = bytes`, for a run folder on another machine (locust
    workers ship them to the master, which names and writes them)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def put_text(self, suffix: str, text: str) -> str:
        self.files[suffix] = text.encode()
        return suffix

    def put_recording(self, suffix: str, write: Any) -> str:
        buffer = io.BytesIO()
        write(buffer)
        self.files[suffix] = buffer.getvalue()
        return suffix

    async def put_download(self, suffix: str, api: UltravoxApi, call_id: str) -> str:
        data = await api.recording(call_id, wait_s=SERVER_RECORDING_WAIT_S)
        if data is None:
            raise ApiRequestError(f"the recording of call {call_id} could not be read")
        self.files[suffix] = data
        return suffix


async def analyse_call(
    result: CallResult,
    scenario: Scenario,
    target: str,
    api: UltravoxApi,
    sink: Sink,
    *,
    tags: dict[str, Any] | None = None,
    record: str | None = None,
) -> tuple[dict[str, Any], CallMetrics, list[Checked]]:
    """Read back, measure, check, write the files; the record (with its `artifacts`), figures and
    checks. `record` overrides the scenario's `client.record` policy. The agent audio file is
    deleted once used."""
    plan = result.plan
    result.timeline.settle_messages()
    try:
        await read_back(api, result)
        metrics, checks = figures(result, scenario)
        artifacts: dict[str, str] = {}
        if keeps_recording(record or plan.record, metrics.outcome):
            if result.timeline.audio_in or result.user_audio:
                placed = call_segments(result, playback(result.timeline))
                artifacts["recording"] = sink.put_recording(
                    ".flac", lambda target: write_recording(target, placed, plan.output_rate)
                )
            if result.call_id and (result.call or {}).get("recordingEnabled"):
                try:
                    artifacts["server_recording"] = await sink.put_download(
                        ".server.wav", api, result.call_id
                    )
                except Exception as exc:  # best effort, like the rest of the read-back
                    result.timeline.add(
                        time.monotonic_ns(), "warning", where="server_recording", message=str(exc)
                    )
        artifacts["timeline"] = sink.put_text(".timeline.json", json.dumps(result.timeline.to_json()))
    finally:
        if result.agent_audio_path is not None:
            result.agent_audio_path.unlink(missing_ok=True)
    record_ = call_record(scenario, target, result, metrics, checks, tags)
    record_["artifacts"] = artifacts
    return record_, metrics, checks
