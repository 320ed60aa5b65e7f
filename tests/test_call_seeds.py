"""Caller audio made before the load starts, and each call's own noise start and network
impairment (issue 14's loose ends)."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from uvbench.audio import source
from uvbench.audio.impairment import impairment_seed
from uvbench.audio.pacer import Schedule
from uvbench.audio.sender import network_impairment
from uvbench.audio.transforms import Codec, Gain, Noise, Reverb, Telephone
from uvbench.call import caller
from uvbench.call.engine import CallContext, CallResult, run_call
from uvbench.call.plan import CallPlan, Endpoint, plan_for
from uvbench.call.rest import CallFailed
from uvbench.call.script import ScriptRun, make_script
from uvbench.call.timeline import Timeline
from uvbench.runner.run import warm_audio
from uvbench.runner.workers import WireCaller
from uvbench.scenario import parse_scenarios
from uvbench.server.process import ServerProcess

NOWHERE = Endpoint("http://127.0.0.1:9/api", "key", "local", True)
CORPUS = Path(__file__).resolve().parents[1] / "audio_corpus"

NOISY = """
name: {name}
call: {{firstSpeakerSettings: {{user: {{}}}}}}
caller:
  gain_db: -3
  reverb: {{room_size: 0.3, wet: 0.2}}
  noise: {{file: pink.flac, snr_db: 20, seed: {noise_seed}}}
  telephone: ulaw
  codec: gsm
network: {{jitter: {{mean_ms: 20}}, bursts: {{hold_ms: 100, every_ms: 700}}, seed: {network_seed}}}
script:
  - say: {first}
  - say: yes_16k.wav
    caller: {{codec: mp3}}
  - hang_up
"""


def scenario(body: str, base_dir: Path | str = "."):
    (one,) = parse_scenarios(textwrap.dedent(body), source="t.yaml", base_dir=str(base_dir))
    return one


def noisy(name: str = "noisy", first: str = "hello_16k.wav", noise_seed: int = 5, network_seed: int = 3):
    return scenario(NOISY.format(name=name, first=first, noise_seed=noise_seed, network_seed=network_seed))


@pytest.fixture(autouse=True)
def cold_caches():
    caller.clear_caches()
    source.clear_cache()
    yield
    caller.clear_caches()


@pytest.fixture(scope="module")
def endpoint():
    with ServerProcess({"agent": {"latency": {"kind": "fixed", "ms": 100}}}) as server:
        yield Endpoint(server.api_url, server.api_key, "local", True)


def forbid_audio_work(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """From now on every decode, effect, noise load and speech level is recorded (and fails)."""
    computed: list[str] = []

    def failing(what: str):
        def fail(*args: Any, **kwargs: Any) -> Any:
            computed.append(what)
            raise AssertionError(f"{what} computed after the warm-up")

        return fail

    for cls in (Gain, Reverb, Telephone, Codec):
        monkeypatch.setattr(cls, "apply", failing(cls.__name__))
    monkeypatch.setattr(Noise, "source", failing("noise source"))
    monkeypatch.setattr(source, "read_audio", failing("decode"))
    monkeypatch.setattr(caller, "speech_rms", failing("speech level"))
    return computed


# -- warm-up ----------------------------------------------------------------------------------------


def test_after_the_warm_up_the_call_path_computes_no_audio(monkeypatch):
    one = noisy()
    warm_audio([one])
    computed = forbid_audio_work(monkeypatch)
    plan = plan_for(one, NOWHERE, call_identity="attempt 1")
    ctx = CallContext(plan, Timeline(0, 0), CallResult(plan, Timeline(0, 0)))
    assert ctx.caller_stream is not None
    ctx.caller_stream.process(np.zeros(320, dtype=np.int16))
    for step in one.script[:2]:  # as call/script.py's _speak asks for each clip
        chain = step.caller.chain() if step.caller is not None else plan.caller
        caller.clip_audio(step.path, plan.input_rate, chain)
    assert computed == []


def test_the_check_can_fail_without_a_warm_up(monkeypatch):
    one = noisy()
    computed = forbid_audio_work(monkeypatch)
    with pytest.raises(AssertionError):
        plan_for(one, NOWHERE)
    assert computed == ["decode"]


async def test_a_warmed_call_on_the_wire_computes_no_audio_and_a_broken_clip_fails_only_its_call(
    endpoint, monkeypatch, tmp_path
):
    shutil.copy(CORPUS / "hello_16k.wav", tmp_path / "mine.wav")
    broken = scenario(
        """
        name: broken
        caller: {gain_db: -3}
        script:
          - say: mine.wav
            speech: {start: 0.1, end: 0.5}
        """,
        tmp_path,
    )
    (tmp_path / "mine.wav").write_bytes(b"RIFF but not audio")  # broken after the scenario was read
    good = noisy("good")
    warm_audio([broken, good])  # does not raise: the broken clip is its own call's to report

    failed = await run_call(
        plan_for(broken, endpoint, call_identity="attempt 1"), make_script(broken, ScriptRun())
    )
    assert failed.failure is not None and "mine.wav" in failed.failure

    computed = forbid_audio_work(monkeypatch)
    plan = plan_for(good, endpoint, run_seed=1, call_identity="attempt 1")
    result = await run_call(plan, make_script(good, ScriptRun()))
    assert computed == []
    assert result.failure is None, result.failure
    assert len(result.timeline.of_kind("utterance.queued")) == 2
    config = result.timeline.first("call.config").data
    assert config["noise_seed"] == plan.call_noise_seed
    assert config["network_seed"] == plan.call_network_seed


# -- seeds per call ---------------------------------------------------------------------------------


def noise_of(plan: CallPlan) -> np.ndarray:
    ctx = CallContext(plan, Timeline(0, 0), CallResult(plan, Timeline(0, 0)))
    assert ctx.caller_stream is not None
    return ctx.caller_stream.process(np.zeros(4000, dtype=np.int16))


def releases_of(plan: CallPlan) -> list[int]:
    schedule = Schedule(plan.input_rate, plan.chunk_samples, 0)
    impairment = network_impairment(plan, 0)
    assert impairment is not None
    return [impairment.release_ns(k, schedule.due_ns(k)) for k in range(100)]


def test_each_call_of_a_scenario_gets_its_own_noise_start_and_schedule_and_a_rerun_the_same():
    one = noisy()

    def plan(call: str, run_seed: int | None = 7) -> CallPlan:
        return plan_for(one, NOWHERE, run_seed=run_seed, call_identity=call)

    first, again, second = plan("attempt 1"), plan("attempt 1"), plan("attempt 2")
    assert first.call_noise_seed == again.call_noise_seed != second.call_noise_seed
    assert first.call_network_seed == again.call_network_seed != second.call_network_seed
    assert np.array_equal(noise_of(first), noise_of(again))
    assert not np.array_equal(noise_of(first), noise_of(second))
    assert releases_of(first) == releases_of(again)
    assert releases_of(first) != releases_of(second)
    # The run's --seed and the scenario's seed: change either, the call changes.
    other_run = plan("attempt 1", run_seed=8)
    assert other_run.call_noise_seed != first.call_noise_seed
    assert releases_of(other_run) != releases_of(first)
    moved = plan_for(noisy(noise_seed=6, network_seed=4), NOWHERE, run_seed=7, call_identity="attempt 1")
    assert moved.call_noise_seed != first.call_noise_seed
    assert moved.call_network_seed != first.call_network_seed


def test_a_call_no_runner_numbered_keeps_the_scenarios_seeds():
    plan = plan_for(noisy(), NOWHERE)
    assert plan.call_noise_seed == 5
    assert plan.call_network_seed == impairment_seed(3, "noisy")
    assert np.array_equal(
        noise_of(plan),
        caller.call_stream(plan.caller, plan.input_rate, plan.speech_level).process(
            np.zeros(4000, dtype=np.int16)
        ),
    )


class RefusingApi:
    """Refuses every create: the call ends before the wire, its `call.config` written."""

    async def create_call(self, body: Any, **_: Any) -> Any:
        raise CallFailed("create_failed", "refused by the test")


async def config_of(plan: CallPlan, one: Any) -> dict[str, Any]:
    result = await run_call(plan, make_script(one, ScriptRun()), api=RefusingApi())
    return result.timeline.first("call.config").data


async def test_the_call_config_records_the_seeds_and_a_plain_call_is_unchanged():
    plain = scenario("name: plain\nscript: [say: hello_16k.wav]")
    one = noisy()
    plain_plan = plan_for(plain, NOWHERE, run_seed=7, call_identity="attempt 3")
    assert plain_plan.call_noise_seed is None and plain_plan.call_network_seed is None
    assert network_impairment(plain_plan, 0) is None
    ctx = CallContext(plain_plan, Timeline(0, 0), CallResult(plain_plan, Timeline(0, 0)))
    assert ctx.caller_stream is None
    assert set(await config_of(plain_plan, plain)) == {
        "scenario", "input_sample_rate", "output_sample_rate", "client_buffer_ms", "chunk_ms",
        "honor_clear", "prebuffer_ms", "caller", "network",
    }  # fmt: skip

    plan = plan_for(one, NOWHERE, run_seed=7, call_identity="attempt 3")
    config = await config_of(plan, one)
    assert config["noise_seed"] == plan.call_noise_seed and config["network_seed"] == plan.call_network_seed
    # The recorded seeds alone give the call's noise and schedule back.
    replay = plan_for(one, NOWHERE)
    stream = caller.call_stream(
        replay.caller, replay.input_rate, replay.speech_level, seed=config["noise_seed"]
    )
    assert np.array_equal(stream.process(np.zeros(4000, dtype=np.int16)), noise_of(plan))
    replayed = network_impairment(replay, 0, seed=config["network_seed"])
    schedule = Schedule(plan.input_rate, plan.chunk_samples, 0)
    assert [replayed.release_ns(k, schedule.due_ns(k)) for k in range(100)] == releases_of(plan)


# -- the runner numbers its calls -------------------------------------------------------------------


async def test_the_pacing_process_gives_each_call_its_identity_and_the_runs_seed(monkeypatch, tmp_path):
    one = noisy()
    plans: list[CallPlan] = []

    async def fake_run_call(plan: CallPlan, script: Any, **_: Any) -> CallResult:
        plans.append(plan)
        return CallResult(plan, Timeline(0, 0))

    monkeypatch.setattr("uvbench.call.engine.run_call", fake_run_call)
    wire = WireCaller([one], {one.name: NOWHERE}, tmp_path, seed=7)
    for attempt in (1, 2):
        await wire.run(one, {"attempt": attempt, "iteration": attempt - 1, "worker": 0}, lambda raw: None)
    assert [(p.run_seed, p.call_identity) for p in plans] == [(7, "attempt 1"), (7, "attempt 2")]
    assert plans[0].call_noise_seed != plans[1].call_noise_seed

    # Under locust each process counts its own attempts: the worker's index tells them apart.
    locust = WireCaller([one], {one.name: NOWHERE}, tmp_path, attempts_per_process=True)
    assert locust.call_identity({"attempt": 1, "worker": 0}) != locust.call_identity(
        {"attempt": 1, "worker": 1}
    )
