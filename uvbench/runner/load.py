"""Load profiles: how many calls run at once, and when they start (k6's vocabulary).

Sans-I/O: a `LoadProfile` answers "how many calls may be in flight at time t" (closed model:
constant or ramping concurrency) or "when does the next call arrive" (open model: a constant
arrival rate). The fan-out runner asks it and starts calls; nothing here sleeps or touches a socket.

- closed, constant:  `concurrency: N` for `duration` or until `iterations` calls have run;
- closed, ramping:   `stages: [{duration, target}]` (each stage's duration is its own length, and
  concurrency moves linearly to `target` by its end, as in k6's ramping-vus);
- open:              `arrival_rate: R` calls per second, at most `max_in_flight` at once; a call
  that cannot start because the cap is reached is dropped and counted (k6's dropped_iterations).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


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
        for stage in self.stages:
            if stage.duration_s <= 0 or stage.target < 0:
                raise LoadError(
                    f"stage {stage.duration_s:g}s:{stage.target}: duration must be > 0, target >= 0"
                )

    @property
    def open_model(self) -> bool:
        return self.arrival_rate is not None

    @property
    def total_duration_s(self) -> float | None:
        if self.stages:
            return sum(s.duration_s for s in self.stages)
        return self.duration_s

    def target_at(self, t_s: float) -> int:
        """Calls allowed in flight `t_s` seconds into the run (closed model)."""
        if not self.stages:
            return self.concurrency
        start_level = 0.0
        elapsed = 0.0
        for stage in self.stages:
            if t_s < elapsed + stage.duration_s:
                fraction = (t_s - elapsed) / stage.duration_s
                return math.floor(start_level + (stage.target - start_level) * fraction + 1e-9)
            elapsed += stage.duration_s
            start_level = stage.target
        return self.stages[-1].target

    def stage_at(self, t_s: float) -> int | None:
        elapsed = 0.0
        for index, stage in enumerate(self.stages):
            elapsed += stage.duration_s
            if t_s < elapsed:
                return index
        return len(self.stages) - 1 if self.stages else None

    def arrival_s(self, k: int) -> float:
        """When call k (from 0) arrives, open model: evenly spaced, not in bursts."""
        assert self.arrival_rate is not None
        return k / self.arrival_rate

    def finished(self, t_s: float, started: int) -> bool:
        """No more calls start after this (running ones finish)."""
        if self.iterations is not None and started >= self.iterations:
            return True
        total = self.total_duration_s
        if total is not None and t_s >= total:
            return True
        return self.iterations is None and total is None and started >= self.concurrency


def parse_stages(text: str) -> tuple[Stage, ...]:
    """k6's CLI form: "30s:20,5m:20,30s:0" (duration:target, comma separated)."""
    from uvbench.scenario import duration_seconds

    stages = []
    for part in text.split(","):
        duration, _, target = part.strip().partition(":")
        try:
            stages.append(Stage(duration_seconds(duration), int(target)))
        except ValueError:
            raise LoadError(
                f"stage {part.strip()!r} is not duration:target (expected e.g. 30s:20,5m:20,30s:0)"
            ) from None
    return tuple(stages)
