"""Network impairment in the paced sender, the timeline's release column, and the figures on it."""

from __future__ import annotations

import asyncio
import json
import textwrap
import time
from array import array
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from tests.test_metrics import Call, ms
from uvbench.audio.impairment import Bursts, Impairment, Jitter
from uvbench.audio.pacer import Composer, Schedule
from uvbench.audio.sender import GRID_NS, PacedSender, Scheduler, network_impairment
from uvbench.call.timeline import Timeline

RATE = 16000
CHUNK = 320  # 20 ms
MS = 1_000_000


class FakeSocket:
    """What a PacedSender needs of a socket: every chunk kept with the time it was handed over."""

    writing_paused = False

    def __init__(self) -> None:
        self.sent: list[tuple[int, bytes]] = []

    def send_binary(self, data: bytes) -> None:
        self.sent.append((time.monotonic_ns(), data))

    def call_when_writable(self, callback: Any) -> None:  # never paused
        raise AssertionError("the fake socket never pauses")


def grid_up(t: int) -> int:
    return -(-t // GRID_NS) * GRID_NS


def on_grid(t: int) -> int:
    return t // GRID_NS * GRID_NS


def sender_of(t0: int, spec: Any, *, seed: int = 7) -> tuple[PacedSender, FakeSocket, Schedule]:
    schedule = Schedule(RATE, CHUNK, t0)
    socket = FakeSocket()
    impairment = Impairment(spec, seed=seed, t0_ns=t0) if spec is not None else None
    sender = PacedSender(schedule, Composer(CHUNK), socket, impairment=impairment)
    return sender, socket, schedule


def burst_release(due: int, t0: int, hold_ms: float, every_ms: float) -> int:
    """Bursts(hold, every, phase 0) done by hand: a chunk due inside [start, start + hold) of a
    window leaves at the window's end; then on the sender's grid."""
    pos = (due - t0) % round(every_ms * MS)
    return grid_up(due - pos + round(hold_ms * MS) if pos < hold_ms * MS else due)


# -- the sender ------------------------------------------------------------------------------------


async def test_bursts_hold_chunks_and_flush_them_in_one_wake_up() -> None:
    """Driven at chosen times (no timer): chunks due in a hold window are captured but held, and
    the wake-up at the window's end sends them all."""
    t0 = on_grid(time.monotonic_ns())
    sender, socket, schedule = sender_of(t0, Bursts(hold_ms=100, every_ms=200, phase_ms=0))
    # Chunks 0-3 (due 20..80 ms) fall in the window [0, 100): held until 100 ms.
    assert sender.send_due(t0 + 99 * MS) is True
    assert socket.sent == [] and sender.held_chunks == 4
    assert sender.composer.next_chunk == 4  # captured at their deadlines: the caller kept time
    assert sender.next_due_ns == t0 + 100 * MS  # the next deadline and the flush coincide
    assert sender.send_due(t0 + 100 * MS) is True
    assert len(socket.sent) == 5 and sender.held_chunks == 0  # 0-3 flushed, 4 due at 100 ms
    assert list(sender.release_rows()) == [t0 + 100 * MS] * 5
    # Chunks due in [100, 200) leave at their deadlines; 9 (due 200 ms) opens the next window.
    assert sender.send_due(t0 + 200 * MS) is True
    assert len(socket.sent) == 9 and sender.held_chunks == 1
    assert list(sender.release_rows())[5:] == [t0 + (20 * k + 20) * MS for k in range(5, 9)]
    assert sender.next_due_ns == t0 + 220 * MS


async def test_bursts_on_the_event_loop_leave_at_their_releases() -> None:
    """A few hundred ms on the real loop: every chunk leaves at or after its release (never
    early), in order, the releases are the bursts' hold ends, and the stop flushes what is held."""
    loop = asyncio.get_running_loop()
    scheduler = Scheduler.of(loop)
    t0, _ = scheduler.stream_epoch(time.monotonic_ns(), 20 * MS)
    hold, every = 60.0, 100.0
    sender, socket, schedule = sender_of(t0, Bursts(hold_ms=hold, every_ms=every, phase_ms=0))
    sender.scheduler = scheduler
    sender.start()
    await asyncio.sleep(0.45)
    sender.stop()
    rows = np.frombuffer(sender.chunk_rows(), dtype=np.int64).reshape(-1, 4)
    releases = np.frombuffer(sender.release_rows(), dtype=np.int64)
    assert len(rows) == len(releases) == len(socket.sent) >= 10
    due, sent = rows[:, 0], rows[:, 1]
    handed = np.array([t for t, _ in socket.sent], dtype=np.int64)
    assert (handed <= sent).all() and (sent[:-1] <= handed[1:]).all()  # stamped once handed over
    assert (handed >= releases).all()  # never handed over before its release
    assert (np.diff(sent) >= 0).all() and (np.diff(releases) >= 0).all()
    assert (releases >= due).all() and (sent >= releases).all()  # never before its release
    expected = np.array([burst_release(int(d), t0, hold, every) for d in due])
    # The chunks still held at the stop left then, earlier than the bursts would have let them:
    # only at the tail, all at the stop's time.
    differ = np.flatnonzero(releases != expected)
    if len(differ):
        assert differ[-1] == len(rows) - 1 and list(differ) == list(range(differ[0], len(rows)))
        assert (releases[differ] < expected[differ]).all() and len(set(releases[differ])) == 1
    kept = releases[: differ[0] if len(differ) else len(rows)]
    # Held chunks share their window's end: 3 chunks (due at 20, 40, 60 ms) leave at 60 ms.
    values, counts = np.unique(kept, return_counts=True)
    assert counts.max() >= 3
    assert all(
        (int(v) - t0) % round(every * MS) == hold * MS for v, c in zip(values, counts, strict=True) if c >= 3
    )


async def test_jitter_keeps_the_order() -> None:
    """Chunks are delayed by random draws yet leave in stream order: each payload in its place."""
    t0 = on_grid(time.monotonic_ns())
    sender, socket, schedule = sender_of(t0, Jitter(mean_ms=15, max_ms=60), seed=3)
    # Stream samples numbered: chunk k's first sample is k*CHUNK (mod 2**15).
    sender.composer.enqueue((np.arange(200 * CHUNK) % 32768).astype(np.int16))
    for step in range(1, 801):  # 4 s of stream in 5 ms wake-ups
        sender.send_due(t0 + step * 5 * MS)
    releases = np.frombuffer(sender.release_rows(), dtype=np.int64)
    rows = np.frombuffer(sender.chunk_rows(), dtype=np.int64).reshape(-1, 4)
    assert len(rows) >= 190
    firsts = [int(np.frombuffer(data[:2], dtype=np.int16)[0]) for _, data in socket.sent]
    assert firsts == [(k * CHUNK) % 32768 for k in range(len(rows))]
    assert (np.diff(releases) >= 0).all()
    delays = releases - rows[:, 0]
    assert (delays >= 0).all() and (delays <= 60 * MS + GRID_NS).all()
    assert len(set(delays.tolist())) > 10  # delayed by varied amounts, not one constant
    # Every chunk released by a wake-up left in it: none released at or before the last wake-up
    # is still held.
    assert sender.held_chunks == len(sender.release_ns) - len(rows)
    assert all(r > t0 + 4000 * MS for r in list(sender.release_ns)[len(rows) :])


async def test_no_impairment_is_todays_sender() -> None:
    t0 = on_grid(time.monotonic_ns())
    plain, plain_socket, _ = sender_of(t0, None)
    none_spec, none_socket, _ = sender_of(t0, Jitter(mean_ms=0, max_ms=0))  # impairs nothing
    assert none_spec.impairment is None
    for sender in (plain, none_spec):
        for step in range(1, 41):
            sender.send_due(t0 + step * 5 * MS)
    assert len(plain_socket.sent) == len(none_socket.sent) == 10
    for sender in (plain, none_spec):
        rows = sender.chunk_rows()
        assert len(rows) == 4 * 10 and len(sender.release_rows()) == 0
        assert list(rows[0::4]) == [t0 + 20 * (k + 1) * MS for k in range(10)]
    assert network_impairment(SimpleNamespace(scenario="s"), t0) is None
    assert network_impairment(SimpleNamespace(scenario="s", network=None), t0) is None
    assert (
        network_impairment(SimpleNamespace(network=Jitter(mean_ms=0, max_ms=0), call_network_seed=1), t0)
        is None
    )


def test_network_impairment_from_a_plan_repeats() -> None:
    from uvbench.call.plan import Endpoint, plan_for
    from uvbench.scenario import parse_scenarios

    (one,) = parse_scenarios(
        "name: s\nnetwork: {jitter: {mean_ms: 20}}\nscript: [say: yes_16k.wav]", source="t.yaml", base_dir="."
    )
    endpoint = Endpoint("http://127.0.0.1:9/api", "key", "local", True)
    schedule = Schedule(RATE, CHUNK, 0)

    def releases(**kw: Any) -> list[int]:
        impairment = network_impairment(plan_for(one, endpoint, **kw), 0)
        assert impairment is not None
        return [impairment.release_ns(k, schedule.due_ns(k)) for k in range(50)]

    assert releases(run_seed=1) == releases(run_seed=1)
    assert releases(run_seed=1, call_identity="a") == releases(run_seed=1, call_identity="a")
    assert releases(run_seed=1, call_identity="a") != releases(run_seed=2, call_identity="a")
    assert releases(run_seed=1, call_identity="a") != releases(run_seed=1, call_identity="b")


# -- the timeline ---------------------------------------------------------------------------------


def test_the_timeline_keeps_the_releases_and_old_timelines_read_as_unimpaired() -> None:
    tl = Timeline(0, 0)
    tl.chunk_sent(20, 21, 0, 320)
    tl.chunk_sent(40, 41, 320, 640)
    plain = tl.to_json()
    assert "audio_out_release_le64" not in plain  # a call without impairment: as before
    back = Timeline.from_json(json.loads(json.dumps(plain)))
    assert len(back.audio_out_release) == 0 and not back.impaired
    tl.audio_out_release = array("q", [30, 45])
    saved = json.loads(json.dumps(tl.to_json()))
    assert saved["audio_out_release_field"] == "release_ns"
    back = Timeline.from_json(saved)
    assert list(back.audio_out_release) == [30, 45] and back.impaired
    saved["audio_out_release_le64"] = Timeline(0, 0, audio_out_release=array("q", [30])).to_json()[
        "audio_out_release_le64"
    ]
    with pytest.raises(ValueError, match="1 values for 2 audio_out rows"):
        Timeline.from_json(saved)


# -- the figures -----------------------------------------------------------------------------------


def impaired(call: Call, delay_ms: dict[int, float], *, n: int = 120, late_ms: float = 0.2) -> None:
    """n chunks of 20 ms from t0, chunk k released `delay_ms[k]` after its deadline (0 if absent)
    and sent `late_ms` after its release; the pacer stops after them."""
    releases = array("q")
    for k in range(n):
        due = ms(Call.T0 + 20 * (k + 1))
        release = due + ms(delay_ms.get(k, 0))
        call.tl.chunk_sent(due, release + ms(late_ms), k * 320, (k + 1) * 320)
        releases.append(release)
    call.tl.audio_out_release = releases
    call.event(Call.T0 + 20 * n, "pacer.stopped", samples_sent=320 * n, samples_due=320 * n, drift_ms=0.0)


def replied_turn(call: Call) -> None:
    """A turn spoken at stream 1000-2000 ms (t_se = 2100: its last sample in chunk 99, due at
    2100) answered by frames heard from 2400."""
    call.utterance("say", (1000, 2000))
    call.state(2390, "speaking")
    call.frames(2400, 5)
    call.agent(2500, final=True)


def test_turn_figures_with_a_network_delay_and_the_delayed_anchor_stands() -> None:
    call = Call()
    replied_turn(call)
    # Chunk 99 released 150 ms late, as are the ones after it until the reply: far over the
    # tolerance (10 ms), yet the link's doing, not the generator's.
    impaired(call, {k: 30 for k in range(99)} | {k: 150 for k in range(99, 120)})
    m = call.compute()
    (turn,) = m.turns
    assert turn["metrics"]["turn.ttfa_ms"] == 300.0  # still from t_se, the clean speech's end
    assert turn["metrics"]["turn.network_delay_ms"] == 150.0
    assert turn["metrics"]["turn.ttfa_heard_ms"] == 150.0  # 2400 - (2100 + 150)
    assert turn["heard_by_ns"] == ms(2250)
    assert (turn["validity"], turn["set_apart"]) == ("valid", {})
    assert turn["anchor_lateness_ms"] == pytest.approx(0.2)  # against the release
    assert m.metrics["call.network_delay_p50_ms"] == 30.0  # 99 chunks of 30, 21 of 150
    assert m.metrics["call.network_delay_max_ms"] == 150.0
    assert m.metrics["pacer.lateness_max_ms"] == pytest.approx(0.2)
    assert m.outcome == "completed"

    # The same sends read as deadlines (no release recorded): late by 150 ms, set apart.
    call.tl.audio_out_release = array("q")
    m = call.compute()
    (turn,) = m.turns
    assert turn["validity"] == "set_apart:anchor_late"
    assert turn["metrics"]["turn.network_delay_ms"] is None
    assert m.metrics["call.network_delay_p50_ms"] is None and m.metrics["call.network_delay_max_ms"] is None


def test_a_generator_late_against_the_release_is_still_set_apart() -> None:
    call = Call()
    replied_turn(call)
    impaired(call, {k: 50 for k in range(120)}, late_ms=12)  # 12 ms after its release: over 10
    (turn,) = call.compute().turns
    assert turn["validity"] == "set_apart:anchor_late"
    assert turn["set_apart"]["turn.ttfa_heard_ms"] == {"value": 250.0, "reason": "anchor_late"}
    assert turn["metrics"]["turn.network_delay_ms"] == 50.0  # the link's delay is never set apart


def test_without_impairment_the_network_figures_are_none() -> None:
    call = Call()
    replied_turn(call)
    for k in range(120):
        due = ms(Call.T0 + 20 * (k + 1))
        call.tl.chunk_sent(due, due, k * 320, (k + 1) * 320)
    m = call.compute()
    (turn,) = m.turns
    assert turn["metrics"]["turn.ttfa_ms"] == 300.0
    assert turn["metrics"]["turn.network_delay_ms"] is None and turn["metrics"]["turn.ttfa_heard_ms"] is None
    assert m.metrics["call.network_delay_p50_ms"] is None


# -- a real call -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def endpoint():
    from uvbench.runner.run import Endpoint
    from uvbench.server.process import ServerProcess

    with ServerProcess({"agent": {"latency": {"kind": "fixed", "ms": 100}}}) as server:
        yield Endpoint(server.api_url, server.api_key, "local", True)


async def test_a_real_call_with_jitter_carries_the_network_figures(endpoint, monkeypatch) -> None:
    from tests.outcomes import MEASURED
    from uvbench.call import engine
    from uvbench.runner import run
    from uvbench.scenario import parse_scenarios

    (one,) = parse_scenarios(
        textwrap.dedent(
            """
            name: jittery
            call: {firstSpeakerSettings: {user: {}}}
            script:
              - say: hello_16k.wav
              - wait_for: agent_done
              - hang_up
            """
        ),
        source="test.yaml",
        base_dir=".",
    )
    spec = Jitter(mean_ms=30, max_ms=120)
    plans: list[Any] = []
    senders: list[PacedSender] = []
    real_plan_for, real_analyse = run.plan_for, run.analyse_call

    def plan_for(*args: Any, **kwargs: Any) -> Any:
        plan = real_plan_for(*args, **kwargs)
        plan.network = spec  # the scenario key `network:` sets it
        plans.append(plan)
        return plan

    class Sender(PacedSender):
        def __init__(self, schedule: Schedule, *args: Any, **kwargs: Any) -> None:
            # What the engine passes once it is wired (uvbench/call/engine.py, `_converse`).
            kwargs.setdefault("impairment", network_impairment(plans[-1], schedule.t0_ns))
            super().__init__(schedule, *args, **kwargs)
            senders.append(self)

    async def analyse_call(result: Any, *args: Any, **kwargs: Any) -> Any:
        if not result.timeline.impaired:  # the engine keeps the releases once it is wired
            result.timeline.audio_out_release = senders[-1].release_rows()
        return await real_analyse(result, *args, **kwargs)

    monkeypatch.setattr(run, "plan_for", plan_for)
    monkeypatch.setattr(engine, "PacedSender", Sender)
    monkeypatch.setattr(run, "analyse_call", analyse_call)
    result, metrics, _, record = await run.run_call_of(one, endpoint)
    assert metrics.outcome in MEASURED, metrics.outcome_detail
    (sender,) = senders
    assert sender.impairment is not None
    releases = np.frombuffer(result.timeline.audio_out_release, dtype=np.int64)
    rows = np.frombuffer(result.timeline.audio_out, dtype=np.int64).reshape(-1, 4)
    assert len(releases) == len(rows) > 50
    assert (releases >= rows[:, 0]).all() and (rows[:, 1] >= releases).all()
    delays_ms = (releases - rows[:, 0]) / MS
    assert delays_ms.max() <= 120 + GRID_NS / MS
    (turn,) = metrics.turns
    figures = turn["metrics"] | {k: v["value"] for k, v in turn["set_apart"].items()}
    assert 0 <= figures["turn.network_delay_ms"] <= 120 + GRID_NS / MS
    assert not turn["missed"]  # completed (or set apart whole): the turn was answered
    assert figures["turn.ttfa_heard_ms"] == pytest.approx(
        (turn["first_audible_ns"] - turn["heard_by_ns"]) / MS
    )
    # Heard from the release, at or after the chunk's deadline, at or after t_se.
    assert figures["turn.ttfa_heard_ms"] <= figures["turn.ttfa_ms"]
    call_figures = record["metrics"]
    assert call_figures["call.network_delay_max_ms"] == pytest.approx(delays_ms.max())
    assert call_figures["call.network_delay_p50_ms"] == pytest.approx(float(np.percentile(delays_ms, 50)))
    # The generator's lateness is counted from the releases, not the deadlines.
    lateness_ms = (rows[:, 1] - releases) / MS
    assert call_figures["pacer.lateness_max_ms"] == pytest.approx(lateness_ms.max())
