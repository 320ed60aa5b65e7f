"""The outgoing stream: exact schedule, exact placement, and no drift in real time under load."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.loaded_loop import block_the_loop, probe_the_loop
from tests.test_transport import FakeSocket, chunk_rows
from uvbench.audio.pacer import Composer, Schedule, drift_ms
from uvbench.audio.sender import PacedSender

NS = 1_000_000_000


@given(
    rate=st.sampled_from([8000, 16000, 22050, 24000, 44100, 48000]),
    chunk_ms=st.sampled_from([10, 20, 40, 100]),
    k=st.integers(0, 10**7),
)
def test_a_chunk_is_due_when_its_last_sample_exists(rate, chunk_ms, k):
    n = rate * chunk_ms // 1000
    schedule = Schedule(rate, n, t0_ns=123)
    due = schedule.due_ns(k)
    exact = 123 + (k + 1) * n * NS / rate
    assert exact <= due < exact + 1  # never before, at most a nanosecond of rounding after
    assert schedule.samples_due(due) >= (k + 1) * n - 1


def test_composer_places_utterances_back_to_back_on_unsent_samples():
    composer = Composer(chunk_samples=4)
    assert composer.chunk(0) == bytes(8)
    first = composer.enqueue(np.arange(1, 7, dtype=np.int16))
    second = composer.enqueue(np.full(3, 9, dtype=np.int16))
    assert (first.start_sample, first.end_sample) == (4, 10)
    assert (second.start_sample, second.end_sample) == (10, 13)
    stream = np.frombuffer(b"".join(composer.chunk(k) for k in range(1, 5)), dtype=np.int16)
    assert stream.tolist() == [1, 2, 3, 4, 5, 6, 9, 9, 9, 0, 0, 0, 0, 0, 0, 0]
    assert not composer.speaking() and composer.queued == []
    with pytest.raises(ValueError, match="chunks leave in order"):
        composer.chunk(9)


def test_drift_is_audio_sent_minus_audio_due():
    schedule = Schedule(16000, 320, t0_ns=0)
    assert drift_ms(schedule, 16000, 1 * NS) == 0
    assert drift_ms(schedule, 15680, 1 * NS) == -20.0


async def naive_send(rate, n, send, stop, on_sent):
    """What most senders do: sleep one chunk, send, repeat. Every late wake-up adds up."""
    k = 0
    while not stop.is_set():
        await asyncio.sleep(n / rate)
        await send(b"")
        on_sent(0, time.monotonic_ns(), k * n, (k + 1) * n)
        k += 1


async def test_no_drift_over_half_a_minute_while_the_event_loop_is_loaded():
    rate, n = 16000, 320
    stop = asyncio.Event()
    results = {}

    async def sink(_: bytes) -> None:
        await asyncio.sleep(0)

    async def stream(name: str, naive: bool) -> None:
        t0 = time.monotonic_ns()
        schedule = Schedule(rate, n, t0)
        sent = []
        lateness = []
        last_at = [t0]

        def on_sent(due, at, a, b):
            sent.append(b)
            last_at[0] = at
            if due:
                lateness.append((at - due) / 1e6)

        if naive:
            await naive_send(rate, n, sink, stop, on_sent)
        else:  # the sender every call uses
            sender = PacedSender(schedule, Composer(n), FakeSocket())
            sender.start()
            await stop.wait()
            sender.stop()
            await sender.done
            for row in chunk_rows(sender):
                on_sent(*row)
        # Drift when the last chunk left: what a stream lost over the half minute. Taken later (when
        # this task got the loop back), a busy machine's last wait would count as drift.
        results[name] = (drift_ms(schedule, sent[-1], last_at[0]), lateness)

    probe_lateness: list[float] = []

    tasks = [asyncio.create_task(stream(f"paced{i}", False)) for i in range(8)]
    tasks.append(asyncio.create_task(stream("naive", True)))
    loader = asyncio.create_task(block_the_loop(stop))
    prober = asyncio.create_task(probe_the_loop(stop, probe_lateness))
    await asyncio.sleep(30)
    stop.set()
    await asyncio.gather(*tasks, loader, prober)
    # No chunk later than the loop's own worst wake-up (about 4 ms on an idle machine: the 3 ms
    # blocks) plus a little: a busy machine delays both alike.
    bound = max(max(probe_lateness), 4.0) + 2.0
    for i in range(8):
        drift, lateness = results[f"paced{i}"]
        assert abs(drift) <= 20.0, f"paced stream {i} drifted {drift} ms"
        assert np.percentile(lateness, 99) <= bound, (sorted(lateness)[-5:], bound)
    naive_drift, _ = results["naive"]
    # The naive sender falls behind by far more than a chunk over the same half minute.
    assert naive_drift < -200.0


async def test_streams_share_a_phase_up_to_its_share_then_open_the_next():
    """Stream epochs: on the 0.5 ms grid, at most one chunk after the socket opened, PHASE_SHARE
    streams per phase (fewer wake-ups), spread over the period once every phase is full."""
    from uvbench.audio.sender import GRID_NS, PHASE_SHARE, Scheduler

    scheduler = Scheduler(asyncio.get_running_loop())
    try:
        chunk_ns = 20_000_000
        phases = chunk_ns // GRID_NS
        opened = 1_000_000_123
        first = -(-opened // GRID_NS) * GRID_NS
        picks = [scheduler.stream_epoch(opened, chunk_ns) for _ in range(PHASE_SHARE * phases + 3)]
        t0s = [t0 for t0, _ in picks]
        assert all(t0 % GRID_NS == 0 and first <= t0 < first + chunk_ns for t0 in t0s)
        # Filled in order, a phase at a time.
        assert t0s[:PHASE_SHARE] == [first] * PHASE_SHARE
        assert t0s[PHASE_SHARE : 2 * PHASE_SHARE] == [first + GRID_NS] * PHASE_SHARE
        assert len(set(t0s[: PHASE_SHARE * phases])) == phases
        # Every phase full: the least used (the earliest of equals) takes the next ones.
        assert t0s[-3:] == [first, first + GRID_NS, first + 2 * GRID_NS]
        # A stream opened later joins a phase with room, the first after it opened.
        for _, key in picks[:2]:
            scheduler.release_phase(key)
        later = opened + 7 * GRID_NS
        t0, _ = scheduler.stream_epoch(later, chunk_ns)
        assert t0 == first + chunk_ns  # phase 0 again, the only one with room, one period on
    finally:
        scheduler.close()


@given(
    rate=st.sampled_from([8000, 16000, 22050, 44100, 48000]),
    chunk_ms=st.sampled_from([10, 20, 30]),
    first=st.one_of(st.integers(0, 10**5), st.just(10**11)),
    count=st.integers(0, 40),
)
def test_chunk_rows_are_each_chunks_deadline_send_time_and_samples(rate, chunk_ms, first, count):
    """A sender keeps only when each chunk left; its rows (deadline, sent, samples) follow from the
    schedule exactly as the send path computed them, numpy or (past int64) Python integers."""
    n = rate * chunk_ms // 1000
    schedule = Schedule(rate, n, t0_ns=987_654_321)
    composer = Composer(n)
    composer.next_chunk = first

    class Loop:
        def create_future(self):
            return None

    class NoScheduler:
        loop = Loop()

    sender = PacedSender(schedule, composer, FakeSocket(), scheduler=NoScheduler())
    sender.sent_ns.extend(schedule.due_ns(first + i) + 1_000 * i for i in range(count))
    assert chunk_rows(sender) == [
        (schedule.due_ns(k), schedule.due_ns(k) + 1_000 * (k - first), k * n, (k + 1) * n)
        for k in range(first, first + count)
    ]


async def test_the_sender_wakes_its_watch_once_the_stream_reaches_its_sample(monkeypatch):
    import types

    from uvbench.audio import sender as sender_module
    from uvbench.call.live import LivePlayback, LiveState

    clock = [0]
    monkeypatch.setattr(sender_module, "time", types.SimpleNamespace(monotonic_ns=lambda: clock[0]))
    live = LiveState(LivePlayback(16000))
    n = 320
    schedule = Schedule(16000, n, t0_ns=1_000_000_000)
    sender = PacedSender(schedule, Composer(n), FakeSocket(), watch=live)
    live.watch_stream(12 * n)
    live.watch_stream(15 * n)
    assert live.stream_wake_sample == 12 * n
    live.changed.clear()
    clock[0] = schedule.due_ns(10)
    sender.send_due(clock[0])  # chunks 0..10: the stream ends at sample 11 n, short of the target
    assert len(sender.sent_ns) == 11 and not live.changed.is_set()
    clock[0] = schedule.due_ns(11)
    sender.send_due(clock[0])  # chunk 11 ends at 12 n
    assert live.changed.is_set()
    live.unwatch_stream(12 * n)
    assert live.stream_wake_sample == 15 * n
    live.unwatch_stream(15 * n)
    live.changed.clear()
    clock[0] = schedule.due_ns(20)
    sender.send_due(clock[0])
    assert not live.changed.is_set() and len(sender.sent_ns) == 21
    sender.scheduler.close()


def test_a_composer_with_a_caller_stream_mixes_the_noise_into_every_chunk():
    from uvbench.audio.transforms import Chain, Noise

    rate, n = 16000, 320
    rng = np.random.default_rng(3)
    bed = Chain((Noise(snr_db=20, samples=rng.standard_normal(rate), sample_rate=rate),))
    level = 0.1  # speech RMS: the noise at 0.01
    noisy = Composer(n, stream=bed.stream(rate, level))
    plain = Composer(n)
    speech = (rng.standard_normal(3 * n) * 3000).astype(np.int16)
    for c in (noisy, plain):
        c.chunk(0)
        c.enqueue(speech)
    out = [np.frombuffer(noisy.chunk(k), dtype=np.int16) for k in range(1, 6)]
    clean = [np.frombuffer(plain.chunk(k), dtype=np.int16) for k in range(1, 6)]
    for got, want in zip(out, clean, strict=True):
        residual = (got.astype(float) - want) / 32768
        assert np.sqrt(np.mean(residual**2)) == pytest.approx(0.01, rel=0.25)  # silences too
    assert not clean[3].any()  # chunks 4 and 5 are silence
    assert plain.chunk(6) is plain._silence  # the plain composer's fast path, untouched
    assert np.frombuffer(noisy.chunk(6), dtype=np.int16).any()
    assert noisy.stream.clipped == 0 and noisy.next_chunk == plain.next_chunk == 7
