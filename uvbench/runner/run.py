"""`uvbench run`: scenarios as calls under a load profile, measured, into a run folder.

`run_scenarios` is the coordinator of a run: it resolves each scenario's target (starting the
local server once, in its own process), creates the run folder, and runs the load in pacing
processes whose finished calls analysis processes measure (runner/workers.py); records reach
results.jsonl as calls end. `run_call_of` runs one call in this process, wire and analysis, for
`uvbench selfcheck`, the tests and the accuracy benchmark.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from uvbench.analysis.call import BytesSink, FolderSink, analyse_call
from uvbench.call.engine import CallResult, run_call, warm_up
from uvbench.call.expect import Checked
from uvbench.call.plan import Endpoint, plan_for
from uvbench.call.rest import UltravoxApi
from uvbench.call.script import ScriptRun, make_script
from uvbench.call.target_health import GIVE_UP_AFTER_S
from uvbench.metrics import CallMetrics
from uvbench.report.rebuild import UNREPORTED
from uvbench.report.run_folder import RunClock, RunFolder, read_results
from uvbench.runner.fanout import LoadGroup, RecordTally, RunState
from uvbench.runner.load import LoadProfile
from uvbench.scenario import Scenario
from uvbench.server.process import ServerProcess

if TYPE_CHECKING:
    from uvbench.runner.step import Stepper

__all__ = ["Endpoint", "plan_for", "run_call_of", "run_scenarios", "RunSummary", "Targets", "TargetError"]


class TargetError(Exception):
    """The run cannot start: a target cannot be used (no API key in the environment, the local server
    did not start), or the run folder cannot be made."""


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


async def run_call_of(
    scenario: Scenario,
    endpoint: Endpoint,
    api: UltravoxApi | None = None,
    *,
    folder: RunFolder | None = None,
    tags: dict[str, Any] | None = None,
) -> tuple[CallResult, CallMetrics, list[Checked], dict[str, Any]]:
    """One call of a scenario in this process: on the wire, then analysed (read back, figures,
    expectations); with `folder`, its files and record written there. (result, figures, checks,
    record)."""
    own_api = api is None
    api = api or UltravoxApi(endpoint.api_url, endpoint.api_key)
    warm_up()
    warm_audio([scenario])
    try:
        with tempfile.TemporaryDirectory(prefix="uvbench-call-") as spool:
            audio = Path(spool) / "agent.pcm" if scenario.client.record != "none" else None
            plan = plan_for(scenario, endpoint, agent_audio_path=audio)
            result = await run_call(plan, make_script(scenario, ScriptRun()), api=api)
            stem = folder.call_stem(scenario.name) if folder is not None else ""
            sink = FolderSink(folder.calls_dir, stem) if folder is not None else BytesSink()
            record, metrics, checks = await analyse_call(
                result, scenario, endpoint.label, api, sink, tags=tags
            )
            if folder is not None:
                record = folder.write_record(stem, record)
    finally:
        if own_api:
            await api.close()
    return result, metrics, checks, record


def warm_audio(scenarios: list[Scenario]) -> None:
    """Make now (cached process-wide) all the audio a scenario's calls send, not under the first
    calls' pacers: every clip decoded at its call's input rate and through its caller chain, the
    speech level the noise is set against and the noise bed. A clip or noise that cannot be made
    is left for its own calls to report, as they would without warming."""
    from uvbench.audio.source import load_pcm
    from uvbench.call.caller import call_stream, clip_audio, speech_level
    from uvbench.scenario import BargeInStep, SayStep

    for scenario in scenarios:
        rate = scenario.input_sample_rate
        for step in scenario.script:
            if isinstance(step, (SayStep, BargeInStep)):
                caller = step.clip_caller(scenario.caller)
                try:
                    # As call/script.py's `_speak` asks for it, so the call finds it cached.
                    if caller is None:
                        load_pcm(step.path, rate)
                    else:
                        clip_audio(step.path, rate, caller.chain())
                except Exception:  # the call itself reports an unreadable clip
                    pass
        chain = scenario.caller.chain() if scenario.caller is not None else None
        if chain is not None and chain.noise is not None:
            try:
                call_stream(chain, rate, speech_level(scenario, rate))
            except Exception:  # the calls report it (plan_for, or the call's stream)
                pass


def _run_folder(out_dir: Path, name: str) -> RunFolder:
    """The run's folder under `out_dir`, or a TargetError (one line) naming why it cannot be."""
    try:
        return RunFolder(out_dir, name)
    except OSError as exc:
        raise TargetError(
            f"cannot create the run folder under {out_dir} ({exc.strerror or exc}): pick another --out"
        ) from None


@dataclass
class RunSummary:
    folder: Path
    records: list[dict[str, Any]]
    interrupted: bool = False
    """Ctrl-C (or SIGTERM) stopped the run: the calls in flight were cancelled, the finished ones
    are kept."""
    stopped_by: str | None = None
    """The signal that stopped it: "SIGINT" or "SIGTERM"."""
    worker_failures: list[str] = field(default_factory=list)
    """One line per pacing process that died (its finished calls are kept)."""
    lost: list[str] = field(default_factory=list)
    """One line per call that ended but gave no record (its analysis failed)."""
    gave_up: str | None = None
    """Why the run stopped itself: every create at a target failed for `--give-up-after`."""

    @property
    def exit_code(self) -> int:
        if not self.records or self.worker_failures or self.gave_up:
            return 3  # nothing measured, or the load generator failed to deliver the asked load
        outcomes = [r["outcome"] for r in self.records]
        if all(o.startswith(("failed:create", "failed:connect", "invalid:")) for o in outcomes):
            # nothing could be measured: the target is unreachable or refuses every call, or the
            # generator could vouch for none of them
            return 3
        # A call a graceful stop cut is neither a pass nor a failure (k6's interrupted iterations).
        return 0 if all(o in ("completed", "interrupted") for o in outcomes) else 1


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
    record: str | None = None,
    give_up_after_s: float | None = GIVE_UP_AFTER_S,
    on_calls_over: Callable[[], None] | None = None,
    command: str | None = None,
) -> RunSummary:
    """Run the scenarios under a load profile (default: each once, one at a time).

    The calls run in `workers` pacing processes and are measured in analysis processes
    (runner/workers.py); each call's record reaches the run folder as it is measured. On Ctrl-C
    the calls in flight are cancelled, what finished is still measured and written, and
    `interrupted` says so. `step` finds the knee (runner/step.py: the stepper decides the
    concurrency, `profile` is not used). `groups` run several loads in parallel instead of
    `profile` (a suite; one pacing process); `scenario_tags` adds tags to the records of the
    scenarios it names; `record` overrides every scenario's `client.record`. When every create at a
    target has failed for `give_up_after_s` (None: never), the run stops and `gave_up` says so.

    summary.json gets its `run` object (`RunClock`: start, end, duration, version, `command`
    (default: this process's command line), host, Python) as soon as the folder is made, its start
    set to the load's start as the first call ends, and the rest of the summary at the end."""
    from uvbench.runner.workers import run_fleet

    if groups and workers > 1:
        raise ValueError("parallel load groups (a suite) run in one pacing process, not with workers")
    if out_dir.exists() and not out_dir.is_dir():  # before starting anything
        raise TargetError(f"--out {out_dir} is a file: name a folder to put the run's folder in")
    targets = Targets(local_server_config)
    try:  # first the targets: a missing API key must not leave an empty run folder behind
        endpoints = {s.name: targets.endpoint(s) for s in scenarios}
        folder = _run_folder(out_dir, name)
    except BaseException:
        targets.close()
        raise
    state = state or RunState()
    clock = RunClock.now(command)
    folder.write_summary({"run": clock.to_json()})  # a run killed mid-way still says when it began
    moved = False

    def load_started() -> bool:
        """The run's start set to the load's (`state.t0`, from which the calls' start offsets count),
        once the pacing processes were told to go; False before."""
        nonlocal moved
        if not moved and state.t0 > clock.started_mono:
            clock.start_at(state.t0)
            moved = True
        return moved

    def call_over(call: dict[str, Any], path: Path) -> None:
        if not moved and load_started():
            folder.write_summary({"run": clock.to_json()})
        if on_call is not None:
            on_call(call, path)

    fleet = None
    try:
        fleet = run_fleet(
            scenarios, folder, endpoints, workers=workers, profile=profile, step=step, groups=groups,
            repeat=repeat, seed=seed, record=record, on_call=call_over, on_drop=on_drop,
            on_worker_failed=on_worker_failed, state=state, scenario_tags=scenario_tags,
            give_up_after_s=give_up_after_s, on_calls_over=on_calls_over,
        )  # fmt: skip
    finally:
        load_started()
        clock.end()  # before the local server's stop, which is no part of the run
        targets.close()  # after the calls: they need the local server to the end
        folder.write_summary(
            {
                "run": clock.to_json(),
                **(fleet.tally if fleet else RecordTally()).to_json(),
                "dropped_calls": state.dropped,
                "interrupted_calls": state.interrupted,
                "lost_calls": len(fleet.lost) if fleet else 0,
                "interrupted": bool(fleet and fleet.interrupted),
                "stopped_by": fleet.stopped_by if fleet else None,
                "gave_up": fleet.gave_up if fleet else None,
                "workers": {
                    "count": len(fleet.specs) if fleet else 0,
                    "failed": fleet.failed if fleet else [],
                },
            }
        )
        folder.close()
    # Read back for the reports, without what no report reads (RebuildResult's light records).
    records = read_results(folder.path / "results.jsonl", leave_out=UNREPORTED)
    return RunSummary(
        folder.path,
        records,
        fleet.interrupted,
        stopped_by=fleet.stopped_by,
        worker_failures=[f["message"] for f in fleet.failed],
        lost=list(fleet.lost),
        gave_up=fleet.gave_up,
    )
