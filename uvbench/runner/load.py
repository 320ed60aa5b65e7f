"""Load profiles: how many calls run at once, and when they start (k6's vocabulary).

Sans-I/O: a `LoadProfile` answers "how many calls may be in flight at time t" (closed model:
constant or ramping concurrency) or "when does the next call arrive" (open model: a constant
arrival rate). The fan-out runner asks it and starts calls; nothing here sleeps or touches a socket.

- closed, constant:  `concurrency: N` for `duration` or until `iterations` calls have run;
- closed, ramping:   `stages: [{duration, target}]` (each stage's duration is its own length, and
  concurrency moves linearly to `target` by its end, as in k6's ramping-vus);
- open:              `arrival_rate: R` calls per second, at most `max_in_flight` at once; a call
  that cannot start because the cap is reached is dropped and counted (k6's dropped_iterations);
- open, ramping:     `rate_stages` (k6's ramping-arrival-rate: the rate moves linearly from
  `start_rate` to each stage's target, in calls per `time_unit_s`);
- per VU:            `iterations_per_vu` (k6's per-vu-iterations: each VU slot runs that many calls);
- graceful stops:    `graceful_stop_s` / `graceful_ramp_down_s` cap how long calls in flight may
  run on after the end / after a ramp-down takes their VU away (unset: they always finish).

Scenario and suite files describe loads with k6's executors (`uvbench.scenario.load_config`),
which map onto these fields.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


class LoadError(ValueError):
    """A load setting that cannot be used; one line saying what and how to fix it."""


@dataclass(frozen=True)
class Stage:
    duration_s: float
    target: int


@dataclass(frozen=True)
class LoadProfile:
    concurrency: int = 1
    duration_s: float | None = None
    iterations: int | None = None
    stages: tuple[Stage, ...] = ()
    arrival_rate: float | None = None
    max_in_flight: int | None = None
    arrival_stride: tuple[int, int] = (0, 1)
    """Open model, one worker's share (w, W) (see `share`): its call k is the run's arrival k*W + w."""
    start_vus: int = 0
    """Closed model with stages: the level at t = 0, from which the first stage ramps (k6's startVUs)."""
    rate_stages: tuple[Stage, ...] = ()
    """Open model, ramping: each stage's target is a rate in calls per `time_unit_s`."""
    start_rate: float = 0.0
    """Open model, ramping: the rate at t = 0, in calls per `time_unit_s` (k6's startRate)."""
    time_unit_s: float = 1.0
    """The unit of `rate_stages` and `start_rate` (k6's timeUnit)."""
    iterations_per_vu: int | None = None
    """Closed model: each of the `concurrency` VU slots runs exactly this many calls
    (k6's per-vu-iterations; `iterations` is then concurrency x this)."""
    graceful_stop_s: float | None = None
    """Calls still in flight this long after the load's end are cancelled (None: they all finish)."""
    graceful_ramp_down_s: float | None = None
    """Stages: a call whose VU a ramp-down took away is cancelled after this long (None: it finishes)."""

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise LoadError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.iterations is not None and self.iterations < 1:
            raise LoadError(f"iterations must be at least 1, got {self.iterations}")
        if self.duration_s is not None and self.duration_s <= 0:
            raise LoadError(f"duration must be positive, got {self.duration_s} s")
        if self.arrival_rate is not None:
            if self.arrival_rate <= 0:
                raise LoadError(f"arrival rate must be positive, got {self.arrival_rate}/s")
            if self.stages:
                raise LoadError("use either an arrival rate (open model) or stages (closed model), not both")
            if self.duration_s is None and self.iterations is None:
                raise LoadError("an arrival rate needs a duration or a number of iterations to stop")
        for stage in (*self.stages, *self.rate_stages):
            if stage.duration_s <= 0 or stage.target < 0:
                raise LoadError(
                    f"stage {stage.duration_s:g}s:{stage.target}: duration must be > 0, target >= 0"
                )
        if self.rate_stages and (self.arrival_rate is not None or self.stages):
            raise LoadError("rate stages (ramping arrival rate) exclude an arrival rate and VU stages")
        if self.start_vus < 0 or self.start_rate < 0 or self.time_unit_s <= 0:
            raise LoadError("start VUs and start rate must be >= 0, the time unit > 0")
        per_vu = self.iterations_per_vu
        if per_vu is not None and self.iterations != self.concurrency * per_vu:
            raise LoadError("per-VU iterations need iterations = concurrency x iterations per VU")
        for name in ("graceful_stop_s", "graceful_ramp_down_s"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise LoadError(f"{name} must be >= 0, got {value}")

    @property
    def open_model(self) -> bool:
        return self.arrival_rate is not None or bool(self.rate_stages)

    @property
    def total_duration_s(self) -> float | None:
        if self.stages or self.rate_stages:
            return sum(s.duration_s for s in self.stages or self.rate_stages)
        return self.duration_s

    @property
    def peak_calls(self) -> int | None:
        """The most calls this profile may have in flight at once; None when only the calls'
        own length would tell (an open model without a cap)."""
        if self.open_model:
            peak = self.max_in_flight
        elif self.stages:
            peak = max(self.start_vus, *(s.target for s in self.stages))
        else:
            peak = self.concurrency
        if peak is not None and self.iterations is not None:
            peak = min(peak, self.iterations)
        return peak

    def target_at(self, t_s: float) -> int:
        """Calls allowed in flight `t_s` seconds into the run (closed model)."""
        if not self.stages:
            return self.concurrency
        start_level = float(self.start_vus)
        elapsed = 0.0
        for stage in self.stages:
            if t_s < elapsed + stage.duration_s:
                fraction = (t_s - elapsed) / stage.duration_s
                return math.floor(start_level + (stage.target - start_level) * fraction + 1e-9)
            elapsed += stage.duration_s
            start_level = stage.target
        return self.stages[-1].target

    def stage_at(self, t_s: float) -> int | None:
        stages = self.stages or self.rate_stages
        elapsed = 0.0
        for index, stage in enumerate(stages):
            elapsed += stage.duration_s
            if t_s < elapsed:
                return index
        return len(stages) - 1 if stages else None

    def arrival_s(self, k: int) -> float:
        """When call k (from 0) arrives, open model: evenly spaced, not in bursts."""
        offset, every = self.arrival_stride
        k = k * every + offset
        if self.rate_stages:
            return self._ramped_arrival_s(k)
        assert self.arrival_rate is not None
        return k / self.arrival_rate

    def _ramped_arrival_s(self, k: int) -> float:
        """Ramping rate: call k arrives when the integral of the rate reaches k (so call 0 at t = 0,
        as with a constant rate); inf if the stages end first. Within a stage the rate is linear,
        so the integral is quadratic and solved exactly, not stepped."""
        done, t0, r0 = 0.0, 0.0, self.start_rate / self.time_unit_s
        for stage in self.rate_stages:
            d, r1 = stage.duration_s, stage.target / self.time_unit_s
            in_stage = (r0 + r1) / 2 * d
            left = k - done
            if left <= in_stage + 1e-9:
                # left = r0 x + a x^2 with a = (r1 - r0) / (2d): the stable root 2 left / (r0 + sqrt(...))
                a = (r1 - r0) / (2 * d)
                root = math.sqrt(max(r0 * r0 + 4 * a * left, 0.0))
                x = 0.0 if left <= 0 else 2 * left / (r0 + root) if r0 + root > 0 else d
                return t0 + min(x, d)
            done += in_stage
            t0 += d
            r0 = r1
        return math.inf

    def finished(self, t_s: float, started: int) -> bool:
        """No more calls start after this (running ones finish)."""
        if self.iterations is not None and started >= self.iterations:
            return True
        total = self.total_duration_s
        if total is not None and t_s >= total:
            return True
        return self.iterations is None and total is None and started >= self.concurrency

    # -- scale-out: one share of the load per worker process (uvbench.runner.workers) -------------

    def useful_workers(self, workers: int) -> int:
        """How many of `workers` get something to do: never more than the calls that may run at
        once, nor than the iterations (a worker whose share would be 0 is not started)."""
        bound = workers
        if self.open_model:
            if self.max_in_flight is not None:
                bound = min(bound, self.max_in_flight)
        elif self.stages:
            bound = min(bound, max(1, self.start_vus, *(s.target for s in self.stages)))
        else:
            bound = min(bound, self.concurrency)
        if self.iterations is not None:
            bound = min(bound, self.iterations)
        return max(1, bound)

    def share(self, worker: int, workers: int) -> LoadProfile | None:
        """Worker `worker`'s (0-based) part of this profile when `workers` processes drive it, or
        None when its part is empty. The parts add up to the whole:

        - counts (concurrency, each stage's target, iterations, max_in_flight) are split as evenly
          as possible, the remainder going to the first workers: 5 over 2 = 3 + 2;
        - open model (constant or ramping rate): worker w takes the run's arrivals w, w+W, w+2W,
          ... at their own times, so each has 1/W of the rate and the merged arrivals are spaced
          exactly as with one process;
        - per-VU iterations: the VUs are split, each keeps its iterations;
        - durations, graceful stops and the time unit are the same for every worker.

        With stages, each stage's target is split, so levels add up exactly at every stage's end;
        during a linear ramp each worker rounds down on its own, which may lag the total by up to
        W-1 calls for a moment."""
        if not 0 <= worker < workers:
            raise ValueError(f"worker {worker} is not one of 0..{workers - 1}")
        if workers == 1:
            return self
        iterations = None if self.iterations is None else split_count(self.iterations, worker, workers)
        if iterations == 0:
            return None
        if self.open_model:
            cap = None if self.max_in_flight is None else split_count(self.max_in_flight, worker, workers)
            if cap == 0:
                return None
            offset, every = self.arrival_stride
            stride = (offset + worker * every, every * workers)
            return replace(self, iterations=iterations, max_in_flight=cap, arrival_stride=stride)
        if self.stages:
            stages = tuple(Stage(s.duration_s, split_count(s.target, worker, workers)) for s in self.stages)
            start_vus = split_count(self.start_vus, worker, workers)
            if start_vus == 0 and all(s.target == 0 for s in stages):
                return None
            return replace(self, iterations=iterations, stages=stages, start_vus=start_vus)
        concurrency = split_count(self.concurrency, worker, workers)
        if concurrency == 0:
            return None
        if self.iterations_per_vu is not None:  # each VU keeps its own count of calls
            iterations = concurrency * self.iterations_per_vu
        return replace(self, concurrency=concurrency, iterations=iterations)


def split_count(total: int, worker: int, workers: int) -> int:
    """Worker `worker`'s part of `total` split as evenly as possible: 5 over 2 = 3 + 2, 1 over 2 = 1 + 0."""
    base, extra = divmod(total, workers)
    return base + (1 if worker < extra else 0)


def parse_stages(text: str) -> tuple[Stage, ...]:
    """k6's CLI form: "30s:20,5m:20,30s:0" (duration:target, comma separated)."""
    from uvbench.scenario import duration_seconds

    if not text.strip():
        raise LoadError("--stage is empty (expected duration:target stages, e.g. 30s:20,5m:20,30s:0)")
    stages = []
    for part in text.split(","):
        duration, _, target = part.strip().partition(":")
        try:
            stage = Stage(duration_seconds(duration), int(target))
        except ValueError:
            raise LoadError(
                f"stage {part.strip()!r} is not duration:target (expected e.g. 30s:20,5m:20,30s:0)"
            ) from None
        if stage.target < 0:
            raise LoadError(f"stage {part.strip()!r}: the target is a number of calls, 0 or more")
        if stage.duration_s <= 0:
            raise LoadError(f"stage {part.strip()!r}: the duration must be positive")
        stages.append(stage)
    return tuple(stages)


def whole_profile(profile: LoadProfile | None, calls: int) -> LoadProfile:
    """The profile with its stop made explicit: one without a duration or iterations runs `calls`
    calls (each scenario `repeat` times), as iterations, so it can be shared among workers."""
    profile = profile or LoadProfile()
    if profile.iterations is not None or profile.total_duration_s is not None:
        return profile
    return LoadProfile(concurrency=profile.concurrency, iterations=calls, max_in_flight=profile.max_in_flight)


PACING_CALLS = 500
"""Calls one pacing process is given before `uvbench run` starts another (when the cores allow):
half of what one carries with its pacer's p99 under 5 ms (docs/benchmarks.md, client capacity)."""


def pacing_processes(peak_calls: int | None, cores: int | None, *, local_server: bool) -> int:
    """How many pacing processes a load needs when --workers is not given: one per PACING_CALLS
    calls at its peak, at most one per core (less the core a local server needs)."""
    if peak_calls is None or peak_calls <= PACING_CALLS:
        return 1
    spare = max(1, (cores or 1) - (1 if local_server else 0))
    return max(1, min(-(-peak_calls // PACING_CALLS), spare))
