"""Network impairment of the outgoing stream: when each chunk actually leaves (sans-I/O).

The pacer still computes every chunk's deadline (`Schedule.due_ns`); an impairment is applied
after it and decides when the chunk is released to the socket, as a bad link between the caller
and the agent would deliver it. Four specs, each a frozen dataclass with a `label` for reports:

- `Jitter(mean_ms, max_ms, distribution)`: each chunk is delayed by a random amount, order kept as
  TCP keeps it: a chunk never leaves before the one ahead of it,
  `release_k = max(release_(k-1), due_k + d_k)`. The draws `d_k` have exactly the mean and the
  bound asked for; the delay a chunk sees can be longer than its draw when it queues behind a
  later-drawn predecessor (head-of-line blocking), never longer than `max_ms`.
- `Bursts(hold_ms, every_ms)`: a mobile link that holds audio then flushes it. Every `every_ms`
  a window of `hold_ms` opens; a chunk handed in inside a window, [start, end), leaves at its end,
  with every other chunk held with it.
- `Stalls(rate_per_min, duration_ms)`: the link stops at random (a Poisson process of that rate,
  started at the stream's epoch) for `duration_ms`; chunks handed in during a stall leave when it
  ends.
- `Mix([...])`: several together. Each is applied in list order to the release time the previous
  one gave (`Mix([Jitter, Bursts])` jitters, then holds what arrives inside a window). Every stage
  is a non-decreasing function of its input, so a mix keeps the order too, and it delays a chunk
  by at most the sum of its stages' worst cases (`max_delay_ms`), which must stay within
  MAX_DELAY_MS.

`Impairment` is one stream's schedule: `release_ns(k, due_ns)` takes the chunks in order, costs
O(1) per chunk and holds no per-chunk state beyond its optional record (8 bytes a chunk: when each
left). Every random draw comes from a seed (`impairment_seed(run seed, call identity)`), each
stage from its own stream of it, so a run repeats exactly and adding a stage to a mix does not
change the draws of the others. No impairment is the identity: `impairment_for` returns None, so a
sender pays nothing per chunk, and `Impairment(None, ...)` releases every chunk at its deadline
and records nothing.

How late the agent could have heard a sample: `heard_by_ns(schedule, end_sample, ...)`, the
release of the chunk holding the last sample before `end_sample`. For the end of a turn's speech
(`t_se` at stream sample `end_sample`) that is the moment the agent had all of it; a latency from
`t_se` minus the same latency from `heard_by_ns` is the part the network took.
"""

from __future__ import annotations

import hashlib
import math
import random
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from uvbench.audio.pacer import Schedule

MS = 1_000_000
"""Nanoseconds in a millisecond."""

MAX_DELAY_MS = 10_000.0
"""The longest an impairment may hold a chunk (a jitter's max, a burst's hold, a stall, and the
sum of a mix's): a link that holds audio for longer is a dropped call, not a degraded one, and the
sender keeps every held chunk in memory (500 chunks of 20 ms per call at this limit)."""

MAX_STALLS_PER_MIN = 60.0
"""Stalls are rare events: more than one a second on average is jitter, and `Jitter` models it."""

MAX_BURST_PERIOD_MS = 600_000.0
"""Bursts repeat at most every ten minutes: a longer period is one held window per call, which a
scenario says better with a stall."""

DISTRIBUTIONS = ("exponential", "uniform")


class ImpairmentError(ValueError):
    """An impairment that cannot be used; the message says which value, the limit, and the fix."""


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ImpairmentError(f"{where}: expected a finite number of milliseconds, got {value!r}")
    if value < 0:
        raise ImpairmentError(f"{where}: {value:g} is negative; delays are 0 or more")
    return float(value)


def _within(value: float, limit: float, where: str, name: str, why: str) -> None:
    if value > limit:
        raise ImpairmentError(f"{where}: {value:g} is over the limit of {limit:g} ({name}, {why}); lower it")


def _ms(value: float) -> str:
    return f"{value:g}ms"


def _default_max_ms(mean_ms: float) -> float:
    # Five means: a tail that makes the odd chunk really late, as on a congested link.
    return min(5 * mean_ms, MAX_DELAY_MS)


@dataclass(frozen=True)
class Jitter:
    """Each chunk delayed by a random draw of mean `mean_ms`, at most `max_ms` (5x the mean when
    not given), order kept.

    distribution "exponential" (default): an exponential truncated at `max_ms`, its rate solved so
    the truncated mean is exactly `mean_ms` (for a mean over half the max the density rises instead
    of falling); any 0 < mean < max, and mean == max is a constant delay. "uniform": uniform on
    [2*mean - max, max], which needs mean >= max/2.
    """

    mean_ms: float
    max_ms: float | None = None
    distribution: str = "exponential"

    def __post_init__(self) -> None:
        mean = _number(self.mean_ms, "jitter mean_ms")
        _within(mean, MAX_DELAY_MS, "jitter mean_ms", "MAX_DELAY_MS", "the longest a chunk may be held")
        top = _default_max_ms(mean) if self.max_ms is None else _number(self.max_ms, "jitter max_ms")
        _within(top, MAX_DELAY_MS, "jitter max_ms", "MAX_DELAY_MS", "the longest a chunk may be held")
        if top < mean:
            raise ImpairmentError(f"jitter max_ms: {top:g} is below mean_ms {mean:g}; raise max_ms")
        if self.distribution not in DISTRIBUTIONS:
            raise ImpairmentError(
                f"jitter distribution: {self.distribution!r} is not one of {', '.join(DISTRIBUTIONS)}"
            )
        if mean == 0 and top > 0:
            raise ImpairmentError(
                f"jitter mean_ms: 0 with max_ms {top:g} never reaches its max; give a mean over 0, "
                "or leave jitter out for none"
            )
        if self.distribution == "uniform" and mean < top / 2:
            raise ImpairmentError(
                f"jitter mean_ms: {mean:g} is below half of max_ms {top:g}, which a uniform delay "
                "cannot have; use distribution exponential or a mean of at least max_ms/2"
            )
        object.__setattr__(self, "mean_ms", mean)
        object.__setattr__(self, "max_ms", top)

    @property
    def max_delay_ms(self) -> float:
        return float(self.max_ms or 0.0)

    @property
    def label(self) -> str:
        text = f"jitter={_ms(self.mean_ms)}"
        if self.max_ms != _default_max_ms(self.mean_ms):
            text += f",max={_ms(self.max_delay_ms)}"
        if self.distribution != "exponential":
            text += f",{self.distribution}"
        return text


@dataclass(frozen=True)
class Bursts:
    """The link holds audio for `hold_ms` every `every_ms`, then flushes it at the window's end.

    `phase_ms` places the first window's start after the stream's epoch; None (the default) draws
    it from the seed in [0, every_ms), so calls started together do not flush together.
    """

    hold_ms: float
    every_ms: float
    phase_ms: float | None = None

    def __post_init__(self) -> None:
        hold = _number(self.hold_ms, "bursts hold_ms")
        every = _number(self.every_ms, "bursts every_ms")
        if hold == 0:
            raise ImpairmentError("bursts hold_ms: 0 holds nothing; give a hold over 0, or leave bursts out")
        _within(hold, MAX_DELAY_MS, "bursts hold_ms", "MAX_DELAY_MS", "the longest a chunk may be held")
        _within(every, MAX_BURST_PERIOD_MS, "bursts every_ms", "MAX_BURST_PERIOD_MS", "use a stall")
        if every <= hold:
            raise ImpairmentError(
                f"bursts every_ms: {every:g} is not over hold_ms {hold:g}, so the link would never "
                "flush; make every_ms longer than hold_ms"
            )
        object.__setattr__(self, "hold_ms", hold)
        object.__setattr__(self, "every_ms", every)
        if self.phase_ms is not None:
            phase = _number(self.phase_ms, "bursts phase_ms")
            if phase >= every:
                raise ImpairmentError(f"bursts phase_ms: {phase:g} is not below every_ms {every:g}; lower it")
            object.__setattr__(self, "phase_ms", phase)

    @property
    def max_delay_ms(self) -> float:
        return self.hold_ms

    @property
    def label(self) -> str:
        return f"bursts={_ms(self.hold_ms)}/{_ms(self.every_ms)}"


@dataclass(frozen=True)
class Stalls:
    """The link stops `rate_per_min` times a minute on average (at random, memoryless), each time
    for `duration_ms`."""

    rate_per_min: float
    duration_ms: float

    def __post_init__(self) -> None:
        if isinstance(self.rate_per_min, bool) or not isinstance(self.rate_per_min, int | float):
            raise ImpairmentError(f"stalls rate_per_min: expected a number, got {self.rate_per_min!r}")
        rate = float(self.rate_per_min)
        if not (rate > 0 and math.isfinite(rate)):
            raise ImpairmentError(
                f"stalls rate_per_min: {self.rate_per_min!r} is not over 0; give a rate, or leave stalls out"
            )
        _within(rate, MAX_STALLS_PER_MIN, "stalls rate_per_min", "MAX_STALLS_PER_MIN", "use jitter")
        duration = _number(self.duration_ms, "stalls duration_ms")
        if duration == 0:
            raise ImpairmentError("stalls duration_ms: 0 stops nothing; give a duration over 0")
        _within(
            duration, MAX_DELAY_MS, "stalls duration_ms", "MAX_DELAY_MS", "the longest a chunk may be held"
        )
        object.__setattr__(self, "rate_per_min", rate)
        object.__setattr__(self, "duration_ms", duration)

    @property
    def max_delay_ms(self) -> float:
        return self.duration_ms

    @property
    def label(self) -> str:
        return f"stalls={self.rate_per_min:g}/min,{_ms(self.duration_ms)}"


Stage = Jitter | Bursts | Stalls


@dataclass(frozen=True)
class Mix:
    """Several impairments, applied in list order, each to the release time the previous gave.
    Nested mixes are flattened; an empty mix is no impairment."""

    parts: tuple[Stage, ...] = field(default_factory=tuple)

    def __init__(self, parts: Iterable[Stage | Mix] = ()) -> None:
        flat: list[Stage] = []
        for part in parts:
            if isinstance(part, Mix):
                flat.extend(part.parts)
            elif isinstance(part, Jitter | Bursts | Stalls):
                flat.append(part)
            else:
                raise ImpairmentError(f"mix: {part!r} is not an impairment (Jitter, Bursts, Stalls or Mix)")
        object.__setattr__(self, "parts", tuple(flat))
        total = self.max_delay_ms
        if total > MAX_DELAY_MS:
            worst = " + ".join(f"{p.max_delay_ms:g}" for p in flat)
            raise ImpairmentError(
                f"mix: its worst delay {worst} = {total:g} ms is over the limit of {MAX_DELAY_MS:g} ms "
                "(MAX_DELAY_MS, the longest a chunk may be held); lower a part"
            )

    @property
    def max_delay_ms(self) -> float:
        return sum(p.max_delay_ms for p in self.parts)

    @property
    def label(self) -> str:
        return "+".join(p.label for p in self.parts) or "none"


Spec = Jitter | Bursts | Stalls | Mix


def _stages_of(spec: Spec | None) -> tuple[Stage, ...]:
    """The stages that delay anything: a sweep's `Jitter(0)` level costs what no impairment does."""
    if spec is None:
        return ()
    if isinstance(spec, Mix):
        parts = spec.parts
    elif isinstance(spec, Jitter | Bursts | Stalls):
        parts = (spec,)
    else:
        raise ImpairmentError(f"impairment: {spec!r} is not one (Jitter, Bursts, Stalls, Mix or None)")
    return tuple(p for p in parts if p.max_delay_ms > 0)


def label(spec: Spec | None) -> str:
    """The report label of `spec`: "none" for no impairment."""
    return "none" if spec is None else spec.label


# -- seeds -----------------------------------------------------------------------------------------


def _derive(*parts: object) -> int:
    # blake2b, not hash(): Python salts str hashes per process, and a run must repeat across them.
    text = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def impairment_seed(run_seed: int | None, call_key: str) -> int:
    """The seed of one call's impairment from the run's seed and the call's identity (for example
    scenario, matrix variant, repeat and slot): the same pair, the same schedule. With no run seed
    the call's identity alone decides, so a call still repeats."""
    return _derive("uvbench.impairment", run_seed, call_key)


# -- the stages' state -----------------------------------------------------------------------------


def _exp_mean_ratio(a: float) -> float:
    """Mean over max of an exponential of rate a/max truncated to [0, max]."""
    if abs(a) < 1e-6:
        return 0.5 - a / 12  # the exact expression cancels catastrophically near 0
    if a > 700:
        return 1 / a
    return 1 / a - 1 / math.expm1(a)


def _solve_exp_rate(ratio: float) -> float:
    """The a (rate times max) whose truncated exponential has mean/max == ratio, for 0 < ratio <= 1/2."""
    lo, hi = 0.0, 2 / ratio + 10  # the mean ratio falls from 1/2 at 0 towards 1/a
    for _ in range(200):
        mid = (lo + hi) / 2
        if _exp_mean_ratio(mid) > ratio:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-15 * hi:
            break
    return (lo + hi) / 2


class _Jitter:
    __slots__ = ("rng", "last", "_kind", "_a", "_b", "_c")

    def __init__(self, spec: Jitter, rng: random.Random) -> None:
        self.rng = rng
        self.last = -(1 << 62)
        mean, top = spec.mean_ms * MS, spec.max_delay_ms * MS
        # Each distribution as delay = f(u), u uniform in [0, 1): one draw, a few flops per chunk.
        if mean == top:
            self._kind, self._a, self._b, self._c = 0, top, 0.0, 0.0
        elif spec.distribution == "uniform":
            self._kind, self._a, self._b, self._c = 1, 2 * mean - top, 2 * (top - mean), 0.0
        else:
            ratio = mean / top
            mirrored = ratio > 0.5  # a rising density is the falling one read from the max down
            a = _solve_exp_rate(1 - ratio if mirrored else ratio)
            if a == 0.0 or ratio == 0.5:
                self._kind, self._a, self._b, self._c = 1, 0.0, top, 0.0
            else:
                self._kind = 3 if mirrored else 2
                self._a, self._b, self._c = top, math.expm1(-a), top / a

    def delay_ns(self) -> int:
        """One draw, in ns."""
        kind = self._kind
        if kind == 0:
            return round(self._a)
        u = self.rng.random()
        if kind == 1:
            return round(self._a + self._b * u)
        # Inverse CDF of the truncated exponential: at most max, reached as u -> 1.
        x = -math.log1p(u * self._b) * self._c
        return round(self._a - x if kind == 3 else x)

    def __call__(self, t: int) -> int:
        # delay_ns inlined for the common case: this runs for every chunk of every call.
        if self._kind == 2:
            t += round(-math.log1p(self.rng.random() * self._b) * self._c)
        else:
            t += self.delay_ns()
        if t < self.last:  # TCP: never ahead of the chunk before
            t = self.last
        self.last = t
        return t


class _Bursts:
    __slots__ = ("origin", "every", "hold")

    def __init__(self, spec: Bursts, rng: random.Random, t0_ns: int) -> None:
        self.every = round(spec.every_ms * MS)
        self.hold = round(spec.hold_ms * MS)
        phase = rng.randrange(self.every) if spec.phase_ms is None else round(spec.phase_ms * MS)
        self.origin = t0_ns + phase

    def __call__(self, t: int) -> int:
        pos = (t - self.origin) % self.every  # windows repeat both ways: before the origin too
        return t - pos + self.hold if pos < self.hold else t


class _Stalls:
    __slots__ = ("rng", "rate", "duration", "start", "end")

    def __init__(self, spec: Stalls, rng: random.Random, t0_ns: int) -> None:
        self.rng = rng
        self.rate = spec.rate_per_min / (60_000 * MS)  # per ns
        self.duration = round(spec.duration_ms * MS)
        self.end = t0_ns
        self._next()

    def _next(self) -> None:
        # A gap of at least 1 ns: a chunk leaving as one stall ends is never caught by the next
        # at once, so no chunk waits longer than one stall.
        self.start = self.end + max(1, round(self.rng.expovariate(self.rate)))
        self.end = self.start + self.duration

    def __call__(self, t: int) -> int:
        # Stalls are drawn as time reaches them: amortised O(1) a chunk, as they are rarer.
        while t >= self.end:
            self._next()
        return self.end if t >= self.start else t


def _stage(spec: Stage, seed: int, index: int, t0_ns: int) -> _Jitter | _Bursts | _Stalls:
    rng = random.Random(_derive(seed, index, type(spec).__name__))
    if isinstance(spec, Jitter):
        return _Jitter(spec, rng)
    if isinstance(spec, Bursts):
        return _Bursts(spec, rng, t0_ns)
    return _Stalls(spec, rng, t0_ns)


# -- one stream's impairment -----------------------------------------------------------------------


class Impairment:
    """When each chunk of one stream leaves, given its deadline; chunks in order, O(1) each.

    `t0_ns` is the stream's epoch (`Schedule.t0_ns`): burst windows and stalls are placed from it.
    With `record` (the default) the release of every chunk is kept in `releases` (an int64 array,
    8 bytes a chunk) from `first_chunk` on; the deadlines follow from the schedule (`rows`).
    """

    __slots__ = ("spec", "seed", "first_chunk", "next_chunk", "releases", "_stages")

    def __init__(self, spec: Spec | None, *, seed: int, t0_ns: int, record: bool = True) -> None:
        stages = _stages_of(spec)
        self.spec = spec
        self.seed = seed
        self._stages = tuple(_stage(s, seed, i, t0_ns) for i, s in enumerate(stages))
        self.first_chunk: int | None = None
        self.next_chunk: int | None = None
        self.releases: array | None = array("q") if record and stages else None

    @property
    def active(self) -> bool:
        """False for no impairment: every chunk leaves at its deadline."""
        return bool(self._stages)

    @property
    def label(self) -> str:
        return label(self.spec)

    def release_ns(self, k: int, due_ns: int) -> int:
        """When chunk `k`, due at `due_ns`, leaves. Chunks must come in order, each once."""
        stages = self._stages
        if not stages:
            return due_ns
        expected = self.next_chunk
        if expected is None:
            self.first_chunk = k
        elif k != expected:
            raise ValueError(f"chunk {k} given, {expected} expected: an impairment takes chunks in order")
        t = due_ns
        for stage in stages:
            t = stage(t)
        self.next_chunk = k + 1
        if self.releases is not None:
            self.releases.append(t)
        return t

    def rows(self, schedule: Schedule) -> np.ndarray:
        """(deadline, release) of every recorded chunk, int64, shape (chunks, 2)."""
        return rows(schedule, self.first_chunk or 0, self.releases or array("q"))

    def heard_by_ns(self, schedule: Schedule, end_sample: int) -> int | None:
        """When the agent could have had the stream up to `end_sample` (see `heard_by_ns`)."""
        if not self.active:
            return heard_by_ns(schedule, end_sample)
        if self.releases is None:
            raise ValueError(
                "this impairment keeps no record (record=False): it cannot say when a chunk left"
            )
        return heard_by_ns(schedule, end_sample, first_chunk=self.first_chunk or 0, releases=self.releases)


def impairment_for(spec: Spec | None, *, seed: int, t0_ns: int, record: bool = True) -> Impairment | None:
    """The stream's impairment, or None when `spec` impairs nothing: a sender holding None sends
    at the deadlines with no call per chunk."""
    impairment = Impairment(spec, seed=seed, t0_ns=t0_ns, record=record)
    return impairment if impairment.active else None


def rows(schedule: Schedule, first_chunk: int, releases: Sequence[int]) -> np.ndarray:
    """(deadline, release) per chunk from `first_chunk` on, int64, shape (chunks, 2); the delay of
    each is the second column minus the first."""
    n = len(releases)
    out = np.empty((n, 2), dtype=np.int64)
    out[:, 0] = np.fromiter((schedule.due_ns(first_chunk + i) for i in range(n)), np.int64, n)
    out[:, 1] = np.frombuffer(releases, dtype=np.int64) if isinstance(releases, array) else releases
    return out


def heard_by_ns(
    schedule: Schedule, end_sample: int, *, first_chunk: int = 0, releases: Sequence[int] | None = None
) -> int | None:
    """When the agent could have heard every stream sample before `end_sample`: the release of the
    chunk holding sample `end_sample - 1` (for the end of speech, `t_se`'s sample: the chunk with the
    last speech sample, not the one starting at `t_se` when it falls on a chunk boundary).

    With no record (`releases` None: no impairment) that chunk's deadline. None when the chunk is
    outside the record (before `first_chunk`, or not sent yet).
    """
    if end_sample <= 0:
        raise ValueError(f"end_sample {end_sample}: the stream has no sample before it")
    k = (end_sample - 1) // schedule.chunk_samples
    if releases is None:
        return schedule.due_ns(k)
    i = k - first_chunk
    if not 0 <= i < len(releases):
        return None
    return int(releases[i])
