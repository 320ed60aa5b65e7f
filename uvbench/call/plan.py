"""What one call needs, resolved from a scenario and its target: the `CallPlan`.

`plan_for(scenario, endpoint)` is the one place a scenario's settings become a call's; the pacing
process and the analysis both make the same plan from the same scenario.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uvbench.audio.impairment import Spec as ImpairmentSpec
from uvbench.audio.impairment import impairment_seed
from uvbench.audio.transforms import Chain
from uvbench.scenario import Scenario


@dataclass(frozen=True)
class Endpoint:
    """Where a scenario's calls go: the API's URL and key, a label for reports, and whether it is
    uvbench's local server (whose ground truth is read after each call)."""

    api_url: str
    api_key: str
    label: str
    local: bool


@dataclass(frozen=True)
class ToolReply:
    result: str | None = None
    delay_s: float = 0.0
    error_type: str | None = None
    error_message: str | None = None
    response_type: str | None = None
    agent_reaction: str | None = None


@dataclass
class CallPlan:
    """Everything one call needs, resolved from a scenario and its target."""

    scenario: str
    api_url: str
    api_key: str
    body: dict[str, Any]
    prior_call_id: str | None = None
    chunk_ms: int = 20
    honor_clear: bool = True
    prebuffer_ms: float = 0.0
    ping_interval_s: float | None = 1.0
    record: str = "all"
    """Which stereo recordings are kept: "all", "failed" (only calls that did not complete) or "none"."""
    agent_audio_path: Path | None = None
    """Where the agent's audio is written as it arrives (for the recording); None: not kept."""
    join_timeout_s: float = 10.0
    tools: dict[str, ToolReply] = field(default_factory=dict)
    local: bool = False
    """The target is uvbench's local server: its ground truth is fetched after the call."""
    caller: Chain | None = None
    """The scenario's caller chain (`caller:`), None without one; a step's own `caller:` replaces
    it for that step's clip (call/script.py)."""
    speech_level: float | None = None
    """The RMS the caller's noise is set against (call/caller.py `speech_level`); None without noise."""
    network: ImpairmentSpec | None = None
    """The impairment of the outgoing stream (`network:`), None without one: the sender applies it."""
    network_seed: int | None = None
    """`network.seed` when the scenario gives one (None without)."""
    run_seed: int | None = None
    """The run's `--seed` (None without one): with `call_identity`, it seeds the call's noise
    start and impairment."""
    call_identity: str | None = None
    """The call among its scenario's calls in the run (the runner sets it: its attempt), so that
    each call gets its own noise start and impairment schedule and a rerun gets the same ones.
    None (a call no runner numbered): the scenario's seeds alone decide, as for every such call."""

    @property
    def call_noise_seed(self) -> int | None:
        """The seed of where this call's noise starts in its loop; None without noise."""
        noise = self.caller.noise if self.caller is not None else None
        if noise is None:
            return None
        if self.call_identity is None:
            return noise.seed
        return _call_seed("noise", self.scenario, noise.seed, self.run_seed, self.call_identity)

    @property
    def call_network_seed(self) -> int | None:
        """The seed of this call's network impairment; None without one."""
        if self.network is None:
            return None
        if self.call_identity is None:
            return impairment_seed(self.network_seed, self.scenario)
        return _call_seed("network", self.scenario, self.network_seed, self.run_seed, self.call_identity)

    @property
    def caller_label(self) -> str:
        """The caller chain's label for records and reports ("clean" without one)."""
        return self.caller.label if self.caller is not None else "clean"

    @property
    def network_label(self) -> str:
        """The network impairment's label ("none" without one)."""
        return self.network.label if self.network is not None else "none"

    @property
    def medium(self) -> dict[str, Any]:
        return self.body["medium"]["serverWebSocket"]

    @property
    def input_rate(self) -> int:
        return int(self.medium["inputSampleRate"])

    @property
    def output_rate(self) -> int:
        return int(self.medium.get("outputSampleRate") or self.input_rate)

    @property
    def client_buffer_ms(self) -> int:
        return int(self.medium.get("clientBufferSizeMs") or 60)

    @property
    def chunk_samples(self) -> int:
        return self.input_rate * self.chunk_ms // 1000


def _call_seed(what: str, scenario: str, scenario_seed: int | None, run_seed: int | None, call: str) -> int:
    """One call's seed for `what`, from the scenario's `seed:`, the run's `--seed` and the call's
    identity (blake2b: the same in every process and on every rerun)."""
    return impairment_seed(run_seed, f"{what}|{scenario}|{scenario_seed}|{call}")


def plan_for(
    scenario: Scenario,
    endpoint: Endpoint,
    *,
    agent_audio_path: Path | None = None,
    run_seed: int | None = None,
    call_identity: str | None = None,
) -> CallPlan:
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
    caller = scenario.caller.chain() if scenario.caller is not None else None
    level = None
    if caller is not None and caller.noise is not None:
        from uvbench.call.caller import speech_level  # the effects, only for a call with noise

        level = speech_level(scenario, scenario.input_sample_rate)
    network = scenario.network
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
        agent_audio_path=agent_audio_path,
        join_timeout_s=client.join_timeout,
        tools=tools,
        local=endpoint.local,
        caller=caller,
        speech_level=level,
        network=network.spec() if network is not None else None,
        network_seed=network.seed if network is not None else None,
        run_seed=run_seed,
        call_identity=call_identity,
    )
