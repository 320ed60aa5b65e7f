"""`uvbench run`: each scenario (and each matrix variant) as a call, measured and written to disk.

Calls run one after the other here; the fan-out runner (concurrency, arrival rates, stages) builds
on `run_call_of` and `RunFolder`. Results are written as each call ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from uvbench.audio.recording import stereo_recording
from uvbench.call.engine import CallPlan, CallResult, ToolReply, run_call
from uvbench.call.expect import Checked, check
from uvbench.call.rest import UltravoxApi
from uvbench.call.script import ScriptRun, make_script
from uvbench.call.timeline import Timeline
from uvbench.metrics import CallMetrics, compute
from uvbench.metrics.call import playback
from uvbench.report.run_folder import RunFolder
from uvbench.runner.fanout import LoadGroup, RunState, run_groups, run_load
from uvbench.runner.load import LoadProfile
from uvbench.scenario import Scenario
from uvbench.server.process import ServerProcess

if TYPE_CHECKING:
    from uvbench.runner.step import Stepper


class TargetError(Exception):
    """The target cannot be used (no API key in the environment, the local server did not start)."""


@dataclass(frozen=True)
class Endpoint:
    api_url: str
    api_key: str
    label: str
    local: bool


@dataclass
class Targets:
    """Resolves each scenario's target once per run; starts the local server when one needs it."""

    local_server_config: dict[str, Any] | None = None
    _server: ServerProcess | None = None
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def endpoint(self, scenario: Scenario) -> Endpoint:
        target = scenario.target
        if target.is_local:
            if self._server is None:
                try:
                    self._server = self._stack.enter_context(ServerProcess(self.local_server_config))
                except RuntimeError as exc:
                    raise TargetError(str(exc)) from None
            return Endpoint(self._server.api_url, self._server.api_key, "local", True)
        key = target.api_key()
        if not key:
            raise TargetError(
                f"scenario {scenario.name}: the API key for {target.label} is not set: "
                f"export {target.api_key_env}=<your key> (keys are read from the environment only)"
            )
        return Endpoint(target.base_url or "", key, target.label, False)

    def close(self) -> None:
        self._stack.close()


def plan_for(scenario: Scenario, endpoint: Endpoint) -> CallPlan:
    client = scenario.client
    tools = {
        name: ToolReply(
            result=answer.result,
            delay_s=answer.delay,
            error_type=answer.error,
            error_message=answer.message,
            response_type=answer.response_type,
            agent_reaction=answer.agent_reaction,
        )
        for name, answer in scenario.tools.items()
    }
    return CallPlan(
        scenario=scenario.name,
        api_url=endpoint.api_url,
        api_key=endpoint.api_key,
        body=scenario.call,
        prior_call_id=scenario.prior_call_id,
        chunk_ms=client.chunk_ms,
        honor_clear=client.honor_clear,
        prebuffer_ms=client.prebuffer_ms,
        ping_interval_s=client.ping_interval,
        record=client.record,
        join_timeout_s=client.join_timeout,
        tools=tools,
        local=endpoint.local,
    )


@dataclass
class CallOutcome:
    scenario: Scenario
    result: CallResult
    metrics: CallMetrics
    checks: list[Checked]
    record: dict[str, Any]


async def run_call_of(
    scenario: Scenario, endpoint: Endpoint, api: UltravoxApi | None = None
) -> tuple[CallResult, CallMetrics, list[Checked], ScriptRun]:
    """One call of a scenario: run it, compute its figures, check its expectations."""
    plan = plan_for(scenario, endpoint)
    script_run = ScriptRun()
    context_box: dict[str, Any] = {}
    script = make_script(scenario, script_run)

    async def scripted(ctx):  # keep the live state for the transcript and tool checks
        context_box["ctx"] = ctx
        await script(ctx)

    result = await run_call(plan, scripted, api=api)
    metrics = await asyncio.to_thread(compute, result.timeline)
    checks: list[Checked] = []
    ctx = context_box.get("ctx")
    if ctx is not None and script_run.expectations:
        for step, expectation in script_run.expectations:
            checked = check(step, expectation, ctx.live, metrics)
            checks.append(checked)
            result.timeline.add(time.monotonic_ns(), "expect.checked", **checked.to_json())
        metrics = await asyncio.to_thread(compute, result.timeline)
    return result, metrics, checks, script_run


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
    endpoint: Endpoint,
    result: CallResult,
    metrics: CallMetrics,
    checks: list[Checked],
    tags: dict[str, Any] | None = None,
) -> dict[str, Any]:
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
        "target": endpoint.label,
        "call_id": result.call_id,
        "passed": metrics.outcome == "completed",
        "outcome": metrics.outcome,
        "outcome_detail": metrics.outcome_detail,
        "error": result.failure,
        "duration_ms": metrics.metrics.get("call.duration_ms"),
        "end_reason": metrics.metrics.get("call.end_reason"),
        **{
            k: m[k]
            for k in ("metrics", "set_apart", "turns", "barge_ins", "underflows", "anchors", "ping_rtts_ms")
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


def write_call(
    folder: RunFolder,
    scenario: Scenario,
    endpoint: Endpoint,
    result: CallResult,
    metrics: CallMetrics,
    checks: list[Checked],
    tags: dict[str, Any] | None = None,
) -> dict[str, Any]:
    recording = None
    if result.plan.record and result.timeline.audio_in:
        recording = stereo_recording(
            result.timeline,
            playback(result.timeline),
            result.user_audio,
            result.agent_audio,
            input_rate=result.plan.input_rate,
            output_rate=result.plan.output_rate,
        )
    stem = folder.call_stem(scenario.name)
    record = call_record(scenario, endpoint, result, metrics, checks, tags)
    return folder.write_call(stem, record, result.timeline.to_json(), recording, result.server_recording)


def warm_audio(scenarios: list[Scenario]) -> None:
    """Decode every clip at its call's input rate now (cached), not under the first calls' pacers."""
    from uvbench.audio.source import load_pcm
    from uvbench.scenario import BargeInStep, SayStep

    for scenario in scenarios:
        for step in scenario.script:
            if isinstance(step, (SayStep, BargeInStep)):
                try:
                    load_pcm(step.path, scenario.input_sample_rate)
                except Exception:  # the call itself reports an unreadable clip
                    pass


class CallWriter:
    """What every runner does per call (one process, a worker process, a locust call engine): run
    the scenario's call on its endpoint and write it to the run folder; the record is returned."""

    def __init__(
        self,
        folder: RunFolder,
        endpoints: dict[str, Endpoint],
        scenario_tags: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.folder = folder
        self.endpoints = endpoints
        self.scenario_tags = scenario_tags or {}
        self.apis: dict[Endpoint, UltravoxApi] = {}

    def api(self, endpoint: Endpoint) -> UltravoxApi:
        if endpoint not in self.apis:
            self.apis[endpoint] = UltravoxApi(endpoint.api_url, endpoint.api_key)
        return self.apis[endpoint]

    async def warm(self, scenarios: list[Scenario]) -> None:
        """Cold-start work before the first call, not under the first calls' pacers: one HTTP
        client per endpoint for the whole run (making one costs tens of milliseconds of CPU, TLS
        setup) and every clip decoded at its call's input rate."""
        for endpoint in self.endpoints.values():
            self.api(endpoint)
        await asyncio.to_thread(warm_audio, scenarios)

    async def run(self, scenario: Scenario, tags: dict[str, Any]) -> dict[str, Any]:
        tags = {**self.scenario_tags.get(scenario.name, {}), **tags}  # the runner's own tags win
        endpoint = self.endpoints[scenario.name]
        result, metrics, checks, _ = await run_call_of(scenario, endpoint, self.api(endpoint))
        # Writing the recording and files is slow work: off the loop the pacers run on.
        return await asyncio.to_thread(
            write_call, self.folder, scenario, endpoint, result, metrics, checks, tags
        )

    async def close(self) -> None:
        for api in self.apis.values():
            await api.close()


@dataclass
class RunSummary:
    folder: Path
    records: list[dict[str, Any]]
    interrupted: bool = False
    """Ctrl-C stopped the run: the calls in flight were cancelled, the finished ones are kept."""
    worker_failures: list[str] = field(default_factory=list)
    """With --workers: one line per worker process that died (its finished calls are kept)."""

    @property
    def exit_code(self) -> int:
        if not self.records or self.worker_failures:
            return 3  # nothing measured, or the load generator failed to deliver the asked load
        outcomes = [r["outcome"] for r in self.records]
        if all(o.startswith(("failed:create", "failed:connect")) for o in outcomes):
            return 3  # nothing could be measured: the target is unreachable or refuses every call
        return 0 if all(o == "completed" for o in outcomes) else 1


def run_scenarios(
    scenarios: list[Scenario],
    out_dir: Path,
    name: str,
    *,
    profile: LoadProfile | None = None,
    repeat: int = 1,
    seed: int | None = None,
    on_call: Callable[[dict[str, Any], Path], None] | None = None,
    on_drop: Callable[[int], None] | None = None,
    state: RunState | None = None,
    local_server_config: dict[str, Any] | None = None,
    workers: int = 1,
    step: Stepper | None = None,
    on_worker_failed: Callable[[str], None] | None = None,
    groups: list[LoadGroup] | None = None,
    scenario_tags: dict[str, dict[str, Any]] | None = None,
) -> RunSummary:
    """Run the scenarios under a load profile (default: each once, one at a time).

    Each call's record reaches the run folder as the call ends; on Ctrl-C the calls in flight are
    cancelled, the summary of what finished is still written, and `interrupted` says so.
    `workers` > 1 runs the load in that many processes (runner/workers.py); `step` finds the knee
    (runner/step.py: the stepper decides the concurrency, `profile` is not used). `groups` run
    several loads in parallel instead of `profile` (a suite, `run_groups`); `scenario_tags` adds
    tags to the records of the scenarios it names."""
    if workers > 1:
        from uvbench.runner.workers import run_workers

        if groups:
            raise ValueError("parallel load groups (a suite) run in one process, not with workers")
        return run_workers(
            scenarios, out_dir, name, workers=workers, profile=profile, step=step, repeat=repeat,
            seed=seed, on_call=on_call, on_drop=on_drop, on_worker_failed=on_worker_failed,
            state=state, local_server_config=local_server_config, scenario_tags=scenario_tags,
        )  # fmt: skip
    hooks = None
    if step is not None:
        from uvbench.runner.step import SteppedLoad

        hooks = SteppedLoad(step)
        profile = hooks.profile
    folder = RunFolder(out_dir, name)
    targets = Targets(local_server_config)
    records: list[dict[str, Any]] = []
    state = state or RunState()
    interrupted = False
    try:
        writer = CallWriter(folder, {s.name: targets.endpoint(s) for s in scenarios}, scenario_tags)

        async def run_one(scenario: Scenario, tags: dict[str, Any]) -> dict[str, Any]:
            record = await writer.run(scenario, tags)
            records.append(record)
            if on_call:
                on_call(record, folder.path)
            return record

        async def run_all() -> None:
            try:
                await writer.warm(scenarios)
                if groups:
                    await run_groups(groups, run_one, repeat=repeat, seed=seed, state=state, on_drop=on_drop)
                    return
                await run_load(
                    scenarios,
                    profile or LoadProfile(),
                    run_one,
                    repeat=repeat,
                    seed=seed,
                    state=state,
                    on_drop=on_drop,
                    hooks=hooks,
                )
            finally:
                await writer.close()

        from uvbench.eventloop import fast_event_loop_factory

        try:
            # uvloop where installed, as the workers and the local server use: a little less
            # CPU per call than asyncio's loop (docs/benchmarks.md, client capacity).
            with asyncio.Runner(loop_factory=fast_event_loop_factory()) as runner:
                runner.run(run_all())
        except KeyboardInterrupt:
            interrupted = True
    finally:
        targets.close()
        folder.write_summary(
            {
                **_summary(records),
                "dropped_calls": state.dropped,
                "interrupted_calls": state.interrupted,
                "interrupted": interrupted,
            }
        )
        folder.close()
    return RunSummary(folder.path, records, interrupted)


def _summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    outcomes: dict[str, int] = {}
    for r in records:
        outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
    return {
        "calls": len(records),
        "outcomes": outcomes,
        "passed": sum(1 for r in records if r["passed"]),
        "scenarios": sorted({r["scenario"] for r in records}),
    }
