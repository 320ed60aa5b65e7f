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
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from uvbench.runner.load import LoadProfile, whole_profile
from uvbench.scenario import Scenario

TICK_S = 0.05
START_GAP_S = 0.001
"""Calls a closed model starts at the same moment (all VUs at t = 0, a round of lockstep calls) are
started this far apart: each one's setup (a REST request, a websocket handshake) then runs on the
loop between the pacers' chunks instead of all of them in one stretch that holds the chunks up
(50 calls: 50 ms; the real start of each is its `start_offset_s`)."""


@dataclass
class RecordTally:
    """The counts of a run's records that summary.json and the exit code need, kept as calls end."""

    calls: int = 0
    passed: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    scenarios: set[str] = field(default_factory=set)

    def add(self, record: dict[str, Any]) -> None:
        self.calls += 1
        self.passed += bool(record.get("passed"))
        self.outcomes[record["outcome"]] = self.outcomes.get(record["outcome"], 0) + 1
        self.scenarios.add(record["scenario"])

    def to_json(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "outcomes": self.outcomes,
            "passed": self.passed,
            "scenarios": sorted(self.scenarios),
        }


LIVE_TTFA_WINDOW = 10_000
"""The live view's latency percentiles are of the last this many turns: a soak's would otherwise
grow a list by every turn (the report's figures are over every call)."""


@dataclass
class RunState:
    """What the live view shows while the run goes on."""

    started: int = 0
    finished: int = 0
    in_flight: int = 0
    dropped: int = 0
    interrupted: int = 0
    """Calls cancelled by a load's gracefulStop or gracefulRampDown (recorded `interrupted`)."""
    outcomes: dict[str, int] = field(default_factory=dict)
    ttfa_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LIVE_TTFA_WINDOW))
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
            # as audio.underflow_per_min: every underflow over all the agent audio heard
            self.agent_audio_ms += metrics.get("call.agent_audio_ms") or 0.0
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


def weighted_order(
    pools: Sequence[tuple[Sequence[Scenario], float]], *, seed: int | None
) -> Iterator[tuple[Scenario, int]]:
    """Forever: each pick chooses a pool (a suite entry) by weight, then that pool's next scenario
    (its matrix variants in turn). Shares follow the weights: with a seed, picks are random from a
    `random.Random(seed)` (the same seed, the same order); without one, smooth weighted round-robin
    (nginx's), so the shares are exact and the order is fixed: weights 3, 1 give A A B A, A A B A...
    Yields (scenario, attempt), attempt counting that scenario's picks from 1."""
    pools = [(list(scenarios), float(weight)) for scenarios, weight in pools]
    if not pools or any(not scenarios or not weight > 0 for scenarios, weight in pools):
        raise ValueError("weighted_order needs pools with scenarios and weights > 0")
    weights = [weight for _, weight in pools]
    total = sum(weights)
    rng = random.Random(seed) if seed is not None else None
    current = [0.0] * len(pools)
    turns = [0] * len(pools)
    attempts: dict[int, int] = {}
    while True:
        if rng is not None:
            index = rng.choices(range(len(pools)), weights=weights)[0]
        else:
            for i, weight in enumerate(weights):
                current[i] += weight
            index = max(range(len(pools)), key=lambda i: current[i])  # first of equals: stable
            current[index] -= total
        scenarios = pools[index][0]
        scenario = scenarios[turns[index] % len(scenarios)]
        turns[index] += 1
        attempts[id(scenario)] = attempts.get(id(scenario), 0) + 1
        yield scenario, attempts[id(scenario)]


async def sleep_until(deadline: float) -> None:
    """Sleep until time.monotonic() reaches `deadline`, never returning before it: uvloop's timers
    may fire up to about a millisecond early, which would start a late group's calls (and tag
    their offset) before its startTime, or an arrival before its time."""
    while (delay := deadline - time.monotonic()) > 0:
        await asyncio.sleep(delay)


class CallHooks(Protocol):
    """Observers of each call of `run_load`, told as it starts (after the state counts it; may add
    or change its tags) and as it ends (with what `run_one` returned, None when the call raised).
    Used by a pacing process (runner/workers.py: run-wide counters and tags, step levels)."""

    def call_started(self, tags: dict[str, Any], state: RunState) -> None: ...

    def call_ended(self, tags: dict[str, Any], handed_over: Any, state: RunState) -> None: ...


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
    hooks: CallHooks | None = None,
    worker: int = 0,
    workers: int = 1,
    order: Iterator[tuple[Scenario, int]] | None = None,
    start_s: float = 0.0,
    origin: float | None = None,
) -> RunState:
    """Start calls as the profile says; `run_one(scenario, tags)` runs one (in a pacing process:
    the call on the wire, handed over for analysis) and returns what `hooks.call_ended` is told.

    `order` replaces the interleaved order (e.g. `weighted_order`). Several loads may share one
    `state` (see `run_groups`): each counts its own calls against its profile; `origin` is then the
    run's start (monotonic seconds), this load begins `start_s` later and tags `start_offset_s`
    from the run's start."""
    state = state or RunState()
    # With a duration or a number of iterations the scenarios come round again until the profile
    # says stop; otherwise each scenario runs `repeat` times.
    cycle = profile.iterations is not None or profile.total_duration_s is not None
    if order is None:
        order = work_order(scenarios, repeat, cycle=cycle, seed=seed)
    if workers > 1:  # one of several worker processes: items worker, worker+W, ... of the run's order
        order = itertools.islice(order, worker, None, workers)
    if not cycle:
        profile = whole_profile(profile, len(scenarios) * repeat)
    tasks: set[asyncio.Task[Any]] = set()
    free_slots: list[int] = []
    next_slot = itertools.count()
    # This load's own counts (the state's are run-wide when loads run in parallel groups).
    mine = {"started": 0, "in_flight": 0}
    per_vu = profile.iterations_per_vu
    vu_calls: dict[int, int] = {}
    running: dict[int, asyncio.Task[Any]] = {}
    leave_at: dict[int, float] = {}  # VU slot -> when its call is cancelled (gracefulRampDown)

    async def call(scenario: Scenario, tags: dict[str, Any], slot: int) -> None:
        record = None
        try:
            record = await run_one(scenario, tags)
        except asyncio.CancelledError:  # the run stopped it (Ctrl-C, SIGTERM, a graceful stop)
            state.interrupted += 1
            raise
        finally:
            state.in_flight -= 1
            mine["in_flight"] -= 1
            state.finished += 1
            running.pop(slot, None)
            if per_vu is None or vu_calls[slot] < per_vu:
                free_slots.append(slot)
            if hooks is not None:
                hooks.call_ended(tags, record, state)

    def slot_free() -> bool:
        """per-vu-iterations: a VU slot that has calls left is free (others always are)."""
        return per_vu is None or bool(free_slots) or len(vu_calls) < profile.concurrency

    def interrupt(task: asyncio.Task[Any]) -> None:
        if not task.done() and not task.cancelling():
            task.cancel()  # counted in `call` as the cancellation ends it

    def start(t_s: float) -> bool:
        try:
            scenario, attempt = next(order)
        except StopIteration:
            return False
        if free_slots:
            slot = free_slots.pop()
        else:
            slot = next(next_slot)
        vu_calls[slot] = vu_calls.get(slot, 0) + 1
        tags = {
            "attempt": attempt,
            "vu": slot,
            "iteration": state.started,
            "concurrency": state.in_flight + 1,
            "stage": profile.stage_at(t_s),
            "start_offset_s": round(start_s + t_s, 3),
        }
        state.started += 1
        state.in_flight += 1
        mine["started"] += 1
        mine["in_flight"] += 1
        if hooks is not None:
            hooks.call_started(tags, state)
        task = asyncio.create_task(call(scenario, tags, slot))
        tasks.add(task)
        running[slot] = task
        task.add_done_callback(tasks.discard)
        return True

    if origin is None:
        origin = state.t0 = time.monotonic()
    if start_s > 0:
        await sleep_until(origin + start_s)
    t0 = origin + start_s
    if profile.open_model:
        cap = profile.max_in_flight
        k = 0
        while True:
            at = profile.arrival_s(k)
            if profile.finished(at, k):
                break
            await sleep_until(t0 + at)
            k += 1
            if cap is not None and mine["in_flight"] >= cap:
                state.dropped += 1
                if on_drop:
                    on_drop(state.dropped)
                continue
            if not start(at):
                break
    else:
        while True:
            t_s = time.monotonic() - t0
            if profile.finished(t_s, mine["started"]):
                break
            target = profile.target_at(t_s)
            if profile.graceful_ramp_down_s is not None:
                # k6's gracefulRampDown: the highest VUs above the target leave; a call still running
                # on one of them this long after is cancelled.
                excess = sorted(running, reverse=True)[: max(0, mine["in_flight"] - target)]
                for slot in [s for s in leave_at if s not in excess]:
                    del leave_at[slot]
                for slot in excess:
                    if t_s >= leave_at.setdefault(slot, t_s + profile.graceful_ramp_down_s):
                        interrupt(running[slot])
            exhausted = False
            together = 0
            while mine["in_flight"] < target and not profile.finished(t_s, mine["started"]) and slot_free():
                if together:
                    await sleep_until(time.monotonic() + START_GAP_S)
                if not start(time.monotonic() - t0):
                    exhausted = True
                    break
                together += 1
            if exhausted:
                break
            await asyncio.sleep(TICK_S)
    total = profile.total_duration_s
    if tasks and profile.graceful_stop_s is not None and total is not None:
        # k6's gracefulStop: calls still running this long after the load's end are cancelled.
        timeout = t0 + total + profile.graceful_stop_s - time.monotonic()
        _, late = await asyncio.wait(set(tasks), timeout=max(0.0, timeout))
        for task in late:
            interrupt(task)
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
    return state


@dataclass(frozen=True)
class LoadGroup:
    """One load of a run whose loads run in parallel (k6's scenarios; a suite's entries)."""

    name: str
    profile: LoadProfile
    pools: tuple[tuple[tuple[Scenario, ...], float], ...]
    """(scenarios, weight) per suite entry; one pool runs its scenarios interleaved, several are
    picked by weight (`weighted_order`)."""
    start_s: float = 0.0
    """k6's startTime: seconds after the run's start."""

    @property
    def scenarios(self) -> list[Scenario]:
        return [scenario for pool, _ in self.pools for scenario in pool]


async def run_groups(
    groups: Sequence[LoadGroup],
    run_one: Callable[[Scenario, dict[str, Any]], Any],
    *,
    repeat: int = 1,
    seed: int | None = None,
    state: RunState | None = None,
    on_drop: Callable[[int], None] | None = None,
    hooks: CallHooks | None = None,
) -> RunState:
    """Every group's load at once on this loop, each from its start offset, sharing one RunState
    (VU numbers are per group; `run_one` can tell groups apart by scenario)."""
    state = state or RunState()
    origin = state.t0 = time.monotonic()
    loads = []
    for index, group in enumerate(groups):
        group_seed = None if seed is None else seed + index
        order = weighted_order(group.pools, seed=group_seed) if len(group.pools) > 1 else None
        loads.append(
            run_load(
                group.scenarios,
                group.profile,
                run_one,
                repeat=repeat,
                seed=group_seed,
                state=state,
                on_drop=on_drop,
                hooks=hooks,
                order=order,
                start_s=group.start_s,
                origin=origin,
            )
        )
    await asyncio.gather(*loads)
    return state
