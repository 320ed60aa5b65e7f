"""A scenario file's `load:` as a locust shape: the users locust should have at each tick.

k6 (and uvbench's YAML) give each stage its own duration and ramp linearly to its target; locust's
stage examples use cumulative end times and step to each target at a spawn rate. Following the
profile's own `target_at` every tick (about once a second) keeps k6's linear ramp: the users are
the ramp's level at that second, spawned within the second. Sans-I/O: the shape class calls it.
"""

from __future__ import annotations

from dataclasses import dataclass

from uvbench.runner.load import LoadProfile


class NotAShape(ValueError):
    """A load locust users cannot follow (open model, or no duration); one line saying why."""


@dataclass(frozen=True)
class ShapePlan:
    profile: LoadProfile

    @classmethod
    def of(cls, profile: LoadProfile) -> ShapePlan:
        if profile.open_model:
            raise NotAShape(
                "an arrival-rate load (open model) is not a number of locust users; "
                "run it with `uvbench run`, or give locust -u/-r/-t"
            )
        if profile.total_duration_s is None:
            raise NotAShape(
                "a load counted in iterations has no duration for locust to follow; "
                "give locust -u/-r/-t, or a `duration:` in the load"
            )
        return cls(profile)

    @property
    def duration_s(self) -> float:
        total = self.profile.total_duration_s
        assert total is not None
        return total

    def tick(self, t_s: float) -> tuple[int, float] | None:
        """(users, spawn rate per second) at `t_s` seconds into the test; None once it is over."""
        if t_s >= self.duration_s:
            return None
        users = self.profile.target_at(t_s)
        following = self.profile.target_at(min(t_s + 1.0, self.duration_s))
        # Fast enough to reach this second's level within the second (all at once at t = 0, as k6
        # starts its VUs), and the next second's along a steep ramp.
        rate = max(1.0, float(abs(following - users)), float(users) if t_s < 1.0 else 0.0)
        return users, rate
