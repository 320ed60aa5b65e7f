"""Network impairment schedules on a fake clock (integer nanoseconds): order, distributions, burst
windows, stalls, mixes, seeds, the identity, limits and a state that does not grow."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

from uvbench.audio.impairment import (
    MAX_BURST_PERIOD_MS,
    MAX_DELAY_MS,
    MAX_STALLS_PER_MIN,
    Bursts,
    Impairment,
    ImpairmentError,
    Jitter,
    Mix,
    Stalls,
    heard_by_ns,
    impairment_for,
    impairment_seed,
    label,
)
from uvbench.audio.pacer import Schedule

MS = 1_000_000
T0 = 10**15  # a monotonic clock some days after boot: every time is a large integer
RATE, CHUNK = 16_000, 320  # 20 ms chunks


def stream(spec, *, seed=7, chunks=1_000, schedule=None, first=0, record=True):
    """Release every chunk of a stream in order; returns (impairment, dues, releases)."""
    schedule = schedule or Schedule(RATE, CHUNK, T0)
    impairment = Impairment(spec, seed=seed, t0_ns=schedule.t0_ns, record=record)
    dues = [schedule.due_ns(k) for k in range(first, first + chunks)]
    releases = [
        impairment.release_ns(k, due) for k, due in zip(range(first, first + chunks), dues, strict=True)
    ]
    return impairment, np.array(dues, dtype=np.int64), np.array(releases, dtype=np.int64)


SPARSE = Schedule(1, 1, T0)
"""One chunk a second: further apart than any jitter's max, so no chunk queues behind another
and each chunk's delay is its own draw."""


# -- jitter -------------------------------------------------------------------------------------------


def test_jitter_keeps_order_exactly_as_tcp_does():
    spec = Jitter(40, 200)
    # The draws do not depend on the deadlines: spaced a second apart, each delay is the draw.
    _, sparse_due, sparse_release = stream(spec, chunks=3_000, schedule=SPARSE)
    draws = sparse_release - sparse_due
    _, due, release = stream(spec, chunks=3_000)
    expected, last = [], -(1 << 62)
    for d, draw in zip(due.tolist(), draws.tolist(), strict=True):
        last = max(last, d + draw)
        expected.append(last)
    assert release.tolist() == expected
    assert np.all(np.diff(release) >= 0)  # never ahead of the chunk before
    delay = release - due
    assert delay.min() >= 0 and delay.max() <= 200 * MS  # queueing never takes a chunk past the max
    # With 40 ms draws on 20 ms chunks, queueing behind a late chunk is common, not a corner case.
    assert np.count_nonzero(delay > draws) > 300


@pytest.mark.parametrize(
    ("spec", "reaches_max"),
    [
        (Jitter(40, 200), True),
        (Jitter(40), True),  # max 5x the mean
        (Jitter(40, 60), True),  # mean over half the max: a rising density
        (Jitter(40, 80), True),  # exactly half: uniform on [0, max]
        (Jitter(40, 50, "uniform"), True),
        (Jitter(25, 25), True),  # a constant delay
        # A thin tail: the max is a bound here, which an exponential of mean 2 ms never comes near.
        (Jitter(2, 10_000), False),
    ],
    ids=lambda s: getattr(s, "label", ""),
)
def test_jitter_draws_have_the_mean_and_max_asked(spec, reaches_max):
    n = 200_000
    _, due, release = stream(spec, chunks=n, schedule=SPARSE, seed=11)
    delays_ms = (release - due) / MS
    top = spec.max_ms
    assert delays_ms.min() >= 0 and delays_ms.max() <= top
    if spec.mean_ms == top:
        assert np.all(delays_ms == top)
        return
    # Tolerance: 5 standard errors of the sample mean (sd / sqrt(n), 0.06 ms at 40 ms mean), within
    # which a correct sampler lands for all but about one seed in 3 million; a sampler that merely
    # clipped an exponential of the asked mean at the max is off by several ms at max 60 ms.
    standard_error = float(delays_ms.std()) / math.sqrt(n)
    assert abs(float(delays_ms.mean()) - spec.mean_ms) <= 5 * standard_error + 1e-6
    # The max is reached where the distribution goes there: the top 0.5 % of the range holds about
    # 40 draws in expectation for the thinnest of those tails (5x the mean: density at the max
    # 2e-4 per 0.5 % of the range, times n).
    if reaches_max:
        assert delays_ms.max() >= 0.995 * top
    if spec.distribution == "uniform":
        assert delays_ms.min() >= 2 * spec.mean_ms - top


# -- bursts ----------------------------------------------------------------------------------------


def test_bursts_release_exactly_at_the_hold_windows_ends():
    spec = Bursts(hold_ms=200, every_ms=1000, phase_ms=0)
    _, due, release = stream(spec, chunks=499)  # due from 20 ms to 9.98 s
    pos = (due - T0) % (1000 * MS)
    held = pos < 200 * MS
    assert np.array_equal(release[held], due[held] - pos[held] + 200 * MS)
    assert np.array_equal(release[~held], due[~held])
    # Ten windows, each flushing its chunks together at its end, on a 20 ms grid: 10 chunks each
    # (due at 0..180 ms into the window; the one due at 200 ms is already out), 9 in the first,
    # whose first chunk falls due 20 ms after t0.
    ends, counts = np.unique(release[held], return_counts=True)
    assert ends.tolist() == [T0 + j * 1000 * MS + 200 * MS for j in range(10)]
    assert counts.tolist() == [9] + [10] * 9
    # The chunk due exactly as a window opens is held; the one due as it closes is not.
    assert release[(due == T0 + 1000 * MS).argmax()] == T0 + 1200 * MS
    assert release[(due == T0 + 1200 * MS).argmax()] == T0 + 1200 * MS


def test_bursts_without_a_phase_draw_one_per_seed():
    spec = Bursts(hold_ms=150, every_ms=700)
    phases = set()
    for seed in range(5):
        _, due, release = stream(spec, seed=seed, chunks=400)
        held_ends = release[release != due]
        residues = set(((held_ends - T0) % (700 * MS)).tolist())
        assert len(residues) == 1  # every window is every_ms after the one before
        phases.add(residues.pop())
        assert np.all(release - due < 150 * MS) and np.all(np.diff(release) >= 0)
    assert len(phases) == 5


# -- stalls ----------------------------------------------------------------------------------------


def test_stalls_hold_what_falls_due_until_they_end():
    spec = Stalls(rate_per_min=6, duration_ms=500)
    minutes = 30
    _, due, release = stream(spec, chunks=minutes * 3_000, seed=3)
    delay = release - due
    assert np.all(np.diff(release) >= 0)
    assert delay.min() == 0 and delay.max() < 500 * MS
    ends = np.unique(release[delay > 0])
    for end in ends.tolist():
        # Everything due in the stall [end - 500 ms, end) leaves at its end, and nothing else does.
        inside = (due >= end - 500 * MS) & (due < end)
        assert np.all(release[inside] == end)
        assert np.array_equal(np.flatnonzero(release == end), np.flatnonzero(inside | (due == end)))
    # A Poisson process of 6 a minute, each stall followed by an exponential gap: one cycle is
    # 10 s + 0.5 s on average, so 171 in 30 min; 4 standard deviations (about 13 each) of slack.
    expected = minutes * 60 / 10.5
    assert abs(len(ends) - expected) <= 4 * math.sqrt(expected)


# -- mixes -----------------------------------------------------------------------------------------


def test_a_mix_applies_each_part_to_the_release_the_one_before_gave():
    jitter, bursts = Jitter(30, 120), Bursts(hold_ms=300, every_ms=1000, phase_ms=250)
    mix = Mix([jitter, Mix([bursts])])  # nested mixes flatten
    assert mix.parts == (jitter, bursts)
    schedule = Schedule(RATE, CHUNK, T0)
    mixed, due, release = stream(mix, chunks=1_000, seed=5)
    # Part i of a mix draws from its own stream of the seed: alone at index 0, jitter is the same.
    alone_jitter = Impairment(jitter, seed=5, t0_ns=T0)
    alone_bursts = Impairment(bursts, seed=5, t0_ns=T0)
    by_parts = [
        alone_bursts.release_ns(k, alone_jitter.release_ns(k, schedule.due_ns(k))) for k in range(1_000)
    ]
    assert release.tolist() == by_parts
    assert np.all(np.diff(release) >= 0)
    assert np.all(release - due <= mix.max_delay_ms * MS) and mix.max_delay_ms == 420
    # Order matters: bursts then jitter spreads each flush out instead.
    _, _, reversed_release = stream(Mix([bursts, jitter]), chunks=1_000, seed=5)
    assert reversed_release.tolist() != release.tolist()
    assert mix.label == "jitter=30ms,max=120ms+bursts=300ms/1000ms"


def test_a_mix_of_everything_keeps_order_and_its_bound():
    mix = Mix([Stalls(20, 800), Jitter(60, 400), Bursts(200, 900)])
    for seed in range(3):
        _, due, release = stream(mix, chunks=20_000, seed=seed)
        delay = release - due
        assert np.all(np.diff(release) >= 0)
        assert delay.min() >= 0 and delay.max() <= 1400 * MS


def test_adding_a_part_leaves_the_draws_of_the_others_alone():
    jitter = Jitter(40, 200)
    _, due, alone = stream(Mix([jitter]), chunks=2_000, seed=9, schedule=SPARSE)
    _, _, with_stalls = stream(Mix([jitter, Stalls(1, 1)]), chunks=2_000, seed=9, schedule=SPARSE)
    # A 1 ms stall moves a chunk by under 1 ms; the jitter draws under it are unchanged.
    assert np.all(np.abs(with_stalls - alone) < MS)
    assert not np.array_equal(with_stalls, due)


# -- seeds -----------------------------------------------------------------------------------------


def test_the_same_seed_repeats_the_schedule_and_another_does_not():
    mix = Mix([Jitter(40, 200), Bursts(100, 2000), Stalls(10, 300)])
    _, _, first = stream(mix, seed=123, chunks=5_000)
    _, _, again = stream(mix, seed=123, chunks=5_000)
    _, _, other = stream(mix, seed=124, chunks=5_000)
    assert first.tolist() == again.tolist()
    assert first.tolist() != other.tolist()


def test_call_seeds_derive_from_run_seed_and_call_identity_alike_in_every_process():
    seed = impairment_seed(7, "quickstart/jitter=40ms/rep0")
    assert seed == impairment_seed(7, "quickstart/jitter=40ms/rep0")
    assert (
        len({seed, impairment_seed(8, "quickstart/jitter=40ms/rep0"), impairment_seed(7, "quickstart/rep1")})
        == 3
    )
    assert impairment_seed(None, "a") == impairment_seed(None, "a") != impairment_seed(None, "b")
    # Python salts str hashes per process; workers must still draw the same schedule.
    code = (
        "from uvbench.audio.impairment import impairment_seed; "
        "print(impairment_seed(7, 'quickstart/jitter=40ms/rep0'))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert int(out.stdout) == seed


# -- the identity ----------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [None, Mix([]), Jitter(0), Jitter(0, 0), Mix([Jitter(0)])], ids=label)
def test_no_impairment_changes_nothing_and_costs_nothing(spec):
    assert impairment_for(spec, seed=1, t0_ns=T0) is None  # a sender holding None makes no call at all
    impairment = Impairment(spec, seed=1, t0_ns=T0)
    assert not impairment.active and impairment.releases is None
    schedule = Schedule(RATE, CHUNK, T0)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        changed = sum(
            impairment.release_ns(k, schedule.due_ns(k)) != schedule.due_ns(k) for k in range(50_000)
        )
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert changed == 0
    assert grown < 1024  # nothing kept per chunk, not even the record
    assert impairment.releases is None and impairment.next_chunk is None
    assert impairment.heard_by_ns(schedule, 321) == schedule.due_ns(1)


# -- limits ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Jitter(40, 20_000), "jitter max_ms: 20000 is over the limit of 10000 (MAX_DELAY_MS"),
        (lambda: Jitter(12_000), "jitter mean_ms: 12000 is over the limit of 10000 (MAX_DELAY_MS"),
        (lambda: Jitter(40, 30), "jitter max_ms: 30 is below mean_ms 40; raise max_ms"),
        (lambda: Jitter(-1), "jitter mean_ms: -1 is negative"),
        (lambda: Jitter(float("nan")), "jitter mean_ms: expected a finite number"),
        (lambda: Jitter(True), "jitter mean_ms: expected a finite number"),
        (lambda: Jitter("40ms"), "jitter mean_ms: expected a finite number"),
        (lambda: Jitter(0, 50), "jitter mean_ms: 0 with max_ms 50 never reaches its max"),
        (lambda: Jitter(10, 50, "uniform"), "below half of max_ms 50"),
        (
            lambda: Jitter(10, 50, "pareto"),
            "jitter distribution: 'pareto' is not one of exponential, uniform",
        ),
        (lambda: Bursts(0, 1000), "bursts hold_ms: 0 holds nothing"),
        (lambda: Bursts(11_000, 60_000), "bursts hold_ms: 11000 is over the limit of 10000 (MAX_DELAY_MS"),
        (lambda: Bursts(500, 500), "bursts every_ms: 500 is not over hold_ms 500"),
        (lambda: Bursts(500, 700_000), f"over the limit of {MAX_BURST_PERIOD_MS:g} (MAX_BURST_PERIOD_MS"),
        (lambda: Bursts(100, 1000, phase_ms=1000), "bursts phase_ms: 1000 is not below every_ms 1000"),
        (lambda: Stalls(0, 500), "stalls rate_per_min: 0 is not over 0"),
        (lambda: Stalls(120, 500), f"stalls rate_per_min: 120 is over the limit of {MAX_STALLS_PER_MIN:g}"),
        (lambda: Stalls(2, 0), "stalls duration_ms: 0 stops nothing"),
        (lambda: Stalls(2, 15_000), "stalls duration_ms: 15000 is over the limit of 10000 (MAX_DELAY_MS"),
        (lambda: Mix([Jitter(1000, 6000), Stalls(1, 5000)]), "mix: its worst delay 6000 + 5000 = 11000 ms"),
        (lambda: Mix(["jitter"]), "mix: 'jitter' is not an impairment"),
        (lambda: Impairment("jitter", seed=1, t0_ns=0), "impairment: 'jitter' is not one"),
    ],
)
def test_limits_are_refused_in_one_line_naming_them(make, message):
    with pytest.raises(ImpairmentError) as refused:
        make()
    text = str(refused.value)
    assert message in text
    assert "\n" not in text


def test_the_limits_themselves_are_allowed():
    assert Jitter(MAX_DELAY_MS, MAX_DELAY_MS).max_delay_ms == MAX_DELAY_MS
    assert (
        Mix([Jitter(100, 4000), Bursts(3000, 9000), Stalls(MAX_STALLS_PER_MIN, 3000)]).max_delay_ms
        == MAX_DELAY_MS
    )


def test_chunks_come_in_order_from_wherever_the_stream_starts():
    impairment = Impairment(Jitter(40), seed=1, t0_ns=T0)
    impairment.release_ns(50, T0 + 51 * 20 * MS)  # a sender started at chunk 50
    impairment.release_ns(51, T0 + 52 * 20 * MS)
    assert impairment.first_chunk == 50 and impairment.next_chunk == 52
    with pytest.raises(ValueError, match="chunk 53 given, 52 expected"):
        impairment.release_ns(53, T0 + 54 * 20 * MS)


# -- state and record ------------------------------------------------------------------------------


def test_state_does_not_grow_with_chunks_and_the_record_is_8_bytes_a_chunk():
    mix = Mix([Jitter(40, 200), Bursts(150, 1300), Stalls(30, 400)])
    schedule = Schedule(RATE, CHUNK, T0)
    n = 50_000
    for record, low, high in [(False, -4096, 4096), (True, 8 * n, 10 * n)]:
        impairment = Impairment(mix, seed=2, t0_ns=T0, record=record)
        for k in range(1_000):  # past every first-use allocation
            impairment.release_ns(k, schedule.due_ns(k))
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for k in range(1_000, 1_000 + n):
                impairment.release_ns(k, schedule.due_ns(k))
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert low <= grown <= high, (record, grown)


def test_rows_and_heard_by_give_the_deadline_and_the_release_of_each_chunk():
    schedule = Schedule(RATE, CHUNK, T0)
    spec = Bursts(hold_ms=100, every_ms=1000, phase_ms=0)
    impairment, due, release = stream(spec, chunks=60, first=5, schedule=schedule)
    rows = impairment.rows(schedule)
    assert (
        rows.dtype == np.int64
        and rows[:, 0].tolist() == due.tolist()
        and rows[:, 1].tolist() == release.tolist()
    )
    # Speech ending on chunk 49's last sample (a chunk boundary) is whole once chunk 49 has left,
    # which a burst holds from its deadline (980 ms after t0) to the window's end (1100 ms).
    end_sample = 50 * CHUNK
    assert schedule.due_ns(49) == T0 + 1000 * MS and release[49 - 5] == T0 + 1100 * MS
    assert impairment.heard_by_ns(schedule, end_sample) == T0 + 1100 * MS
    assert impairment.heard_by_ns(schedule, end_sample - 100) == T0 + 1100 * MS  # mid-chunk: the same chunk
    assert impairment.heard_by_ns(schedule, 30 * CHUNK) == schedule.due_ns(29)  # outside a window
    assert impairment.heard_by_ns(schedule, 5 * CHUNK) is None  # before this sender's first chunk
    assert impairment.heard_by_ns(schedule, 65 * CHUNK + 1) is None  # not sent yet
    # An agent answering 600 ms after t_se answered 500 ms after it could have heard the end.
    answer = schedule.stream_ns(end_sample) + 600 * MS
    assert (answer - impairment.heard_by_ns(schedule, end_sample)) // MS == 500
    assert heard_by_ns(schedule, end_sample) == schedule.due_ns(49)  # no record: no impairment
    with pytest.raises(ValueError, match="keeps no record"):
        stream(spec, record=False)[0].heard_by_ns(schedule, end_sample)


def test_labels_name_each_level():
    assert Jitter(40).label == "jitter=40ms"
    assert Jitter(40, 100).label == "jitter=40ms,max=100ms"
    assert Jitter(40, 50, "uniform").label == "jitter=40ms,max=50ms,uniform"
    assert Jitter(2.5).label == "jitter=2.5ms"
    assert Bursts(200, 1000).label == "bursts=200ms/1000ms"
    assert Stalls(2, 500).label == "stalls=2/min,500ms"
    assert label(None) == label(Mix([])) == "none"
    assert Jitter(40.0).label == Jitter(40).label and Jitter(40.0) == Jitter(40, 200)
