"""The fan-out runner: many concurrent calls on one event loop, shaped by a load profile.

Each call is the same engine `uvbench run` uses for one call; this module only decides when calls
start (closed model: keep N in flight; open model: start them at a rate) and streams each record
to the run folder as the call ends, tagged with the concurrency it started at, its stage, its VU
slot and iteration, so latency can be read against load.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from uvbench.runner.load import LoadProfile
from uvbench.scenario import Scenario

TICK_S = 0.05


@dataclass
class RunState:
    """What the live view shows while the run goes on."""

    started: int = 0
    finished: int = 0
    in_flight: int = 0
    dropped: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    ttfa_ms: list[float] = field(default_factory=list)
    underflows: int = 0
    agent_audio_ms: float = 0.0
    worst_pacer_p99_ms: float = 0.0
    t0: float = field(default_factory=time.monotonic)

    def count(self, prefix: str) -> int:
        return sum(n for outcome, n in self.outcomes.items() if outcome.startswith(prefix))

    def record(self, record: dict[str, Any]) -> None:
        """Fold a finished call into the running figures."""
        self.outcomes[record["outcome"]] = self.outcomes.get(record["outcome"], 0) + 1
        metrics = record.get("metrics", {})
        if not record["outcome"].startswith("invalid:"):
            for turn in record.get("turns", []):
                if turn["metrics"].get("turn.ttfa_ms") is not None:
                    self.ttfa_ms.append(turn["metrics"]["turn.ttfa_ms"])
                self.agent_audio_ms += turn["metrics"].get("turn.agent_audio_ms") or 0.0
            self.underflows += metrics.get("call.underflow_count") or 0
        p99 = metrics.get("pacer.lateness_p99_ms")
        if p99 is not None:
            self.worst_pacer_p99_ms = max(self.worst_pacer_p99_ms, p99)

    def elapsed_s(self) -> float:
        return time.monotonic() - self.t0


def work_order(
    scenarios: list[Scenario], repeat: int, *, cycle: bool, seed: int | None
) -> Iterator[tuple[Scenario, int]]:
    """Scenarios interleaved (A#1, B#1, A#2, ...), each `repeat` times, or forever when `cycle`.
    With a seed the order within each round is shuffled reproducibly."""
    rng = random.Random(seed)
    rounds = itertools.count(1) if cycle else range(1, repeat + 1)
    for attempt in rounds:
        batch = list(scenarios)
        if seed is not None:
            rng.shuffle(batch)
        for scenario in batch:
            yield scenario, attempt


CallRunner = Callable[[Scenario, dict[str, Any]], "asyncio.Future[dict[str, Any]] | Any"]


async def run_load(
    scenarios: list[Scenario],
    profile: LoadProfile,
    run_one: Callable[[Scenario, dict[str, Any]], Any],
    *,
    repeat: int = 1,
    seed: int | None = None,
    state: RunState | None = None,
    on_drop: Callable[[int], None] | None = None,
) -> RunState:
    """Start calls as the profile says; `run_one(scenario, tags)` runs one and returns its record."""
    state = state or RunState()
    # With a duration or a number of iterations the scenarios come round again until the profile
    # says stop; otherwise each scenario runs `repeat` times.
    cycle = profile.iterations is not None or profile.total_duration_s is not None
    order = work_order(scenarios, repeat, cycle=cycle, seed=seed)
    if not cycle:
        profile = LoadProfile(
            concurrency=profile.concurrency,
            iterations=len(scenarios) * repeat,
            max_in_flight=profile.max_in_flight,
        )
    tasks: set[asyncio.Task[Any]] = set()
    free_slots: list[int] = []
    next_slot = itertools.count()

    async def call(scenario: Scenario, tags: dict[str, Any], slot: int) -> None:
        try:
            record = await run_one(scenario, tags)
            state.record(record)
        finally:
            state.in_flight -= 1
            state.finished += 1
            free_slots.append(slot)

    def start(t_s: float) -> bool:
        try:
            scenario, attempt = next(order)
        except StopIteration:
            return False
        slot = free_slots.pop() if free_slots else next(next_slot)
        tags = {
            "attempt": attempt,
            "vu": slot,
            "iteration": state.started,
            "concurrency": state.in_flight + 1,
            "stage": profile.stage_at(t_s),
            "start_offset_s": round(t_s, 3),
        }
        state.started += 1
        state.in_flight += 1
        task = asyncio.create_task(call(scenario, tags, slot))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return True

    t0 = time.monotonic()
    state.t0 = t0
    if profile.open_model:
        cap = profile.max_in_flight
        k = 0
        while True:
            at = profile.arrival_s(k)
            if profile.finished(at, k):
                break
            delay = t0 + at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            k += 1
            if cap is not None and state.in_flight >= cap:
                state.dropped += 1
                if on_drop:
                    on_drop(state.dropped)
                continue
            if not start(at):
                break
    else:
        while True:
            t_s = time.monotonic() - t0
            if profile.finished(t_s, state.started):
                break
            target = profile.target_at(t_s)
            exhausted = False
            while state.in_flight < target and not profile.finished(t_s, state.started):
                if not start(t_s):
                    exhausted = True
                    break
            if exhausted:
                break
            await asyncio.sleep(TICK_S)
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
    return state
