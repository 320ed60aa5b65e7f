"""Call metrics from hand-built timelines: every figure's exact value, outcomes, and properties."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uvbench.call.timeline import Event, Timeline
from uvbench.metrics import CALL_METRICS, GLOSSARY, INTERRUPT_METRICS, TURN_METRICS, CallMetrics, compute

MS = 1_000_000
RATE = 16000
FRAME = 320  # 20 ms


def ms(x: float) -> int:
    return round(x * MS)


class Call:
    """Builds a timeline on a ms scale. The stream epoch t0 is at 100 ms (when the socket opens)."""

    T0 = 100

    def __init__(self, *, rate: int = RATE, out_rate: int = RATE, setup: bool = True, **config: Any) -> None:
        self.rate, self.out_rate = rate, out_rate
        self.tl = Timeline(mono_epoch_ns=0, wall_epoch_ns=1_700_000_000 * 10**9)
        cfg = {
            "scenario": "test",
            "input_sample_rate": rate,
            "output_sample_rate": out_rate,
            "client_buffer_ms": 60,
            "chunk_ms": 20,
            "honor_clear": True,
            "prebuffer_ms": 0,
        }
        cfg.update(config)
        self.tl.add(0, "call.config", **cfg)
        if setup:
            self.event(0, "call.create_sent", attempt=1)
            self.event(40, "call.create_answered", attempt=1, status=429, retry_after_s=0.01)
            self.event(50, "call.create_sent", attempt=2)
            self.event(80, "call.create_answered", attempt=2, status=201)
            self.event(80, "call.created", call_id="c1", join_url="ws://x")
            self.event(90, "ws.connect_started")
            self.event(100, "ws.open")
            self.msg(112, type="call_started", callId="c1")
            self.event(
                self.T0, "pacer.started", t0_ns=ms(self.T0), sample_rate=rate, chunk_samples=rate // 50
            )

    def event(self, t: float, event_kind: str, **data: Any) -> None:
        # Appended directly: `Timeline.add(t, kind, **data)` cannot take a `kind` key in data.
        self.tl.events.append(Event(ms(t), event_kind, data))

    def msg(self, t: float, **message: Any) -> None:
        self.tl.add(ms(t), "msg.in", message=message)

    def state(self, t: float, state: str) -> None:
        self.msg(t, type="state", state=state)

    def agent(self, t: float, *, final: bool = False, text: str = "hi") -> None:
        self.msg(t, type="transcript", role="agent", medium="voice", text=text, final=final, ordinal=1)

    def user(self, t: float) -> None:
        self.msg(t, type="transcript", role="user", medium="voice", text="hello", final=True, ordinal=2)

    def clear(self, t: float) -> None:
        self.msg(t, type="playback_clear_buffer")

    def utterance(self, kind: str, speech_ms: tuple[float, float], step: int = 0) -> None:
        """Speech at stream times [a, b) ms after t0 (queued at t0)."""
        a, b = (round(x * self.rate / 1000) for x in speech_ms)
        self.event(
            self.T0,
            "utterance.queued",
            step=step,
            kind=kind,
            file="x.wav",
            start_sample=a - 100,
            speech_start_sample=a,
            speech_end_sample=b,
            end_sample=b + 100,
        )

    def frames(self, t: float, n: int, *, every: float = 20, first: int = 0, last: int = FRAME - 1) -> None:
        """n frames of 20 ms (at 16 kHz) arriving from t, `every` ms apart."""
        for k in range(n):
            self.tl.frame_received(ms(t + k * every), FRAME, first, last)

    def close(self, t: float, code: int = 1000, by: str = "server") -> None:
        self.event(t, "ws.closed", code=code, reason="", by=by)

    def compute(self) -> CallMetrics:
        self.tl.events.sort(key=lambda e: e.t_ns)
        return compute(self.tl)


def greeting(call: Call) -> None:
    """A greeting heard from 160 ms: first frame audible from its sample 160."""
    call.state(140, "speaking")
    call.frames(150, 1, first=160)
    call.frames(170, 9)
    call.agent(155)
    call.agent(350, final=True)
    call.state(351, "listening")


# -- per turn -------------------------------------------------------------------------------------


def test_turn_metrics_exact() -> None:
    call = Call()
    greeting(call)
    call.utterance("say", (1000, 2000), step=1)  # t_ss = 1100, t_se = 2100
    call.user(2400)
    call.state(2500, "thinking")
    call.state(2600, "speaking")
    call.agent(2610)
    call.frames(2650, 1, first=-1, last=-1)  # silent first frame
    call.frames(2670, 1, first=80)  # heard from 2675
    call.frames(2690, 8)  # plays until 2850
    call.frames(2900, 10)  # underflow 2850 -> 2900; plays until 3100
    call.agent(3100, final=True)
    call.state(3101, "listening")
    call.close(3500)
    m = call.compute()
    assert len(m.turns) == 1
    turn = m.turns[0]
    assert turn["index"] == 0 and turn["step"] == 1 and turn["missed"] is False
    assert turn["metrics"] == {
        "turn.ttfb_ms": 550.0,
        "turn.ttfa_ms": 575.0,
        "turn.thinking_ms": 400.0,
        "turn.agent_transcript_ms": 510.0,
        "turn.user_transcript_ms": 300.0,
        "turn.agent_audio_ms": 375.0,
        "turn.underflow_count": 1,
        "turn.underflow_ms": 50.0,
        "turn.talk_over_ms": 0.0,
        "turn.network_delay_ms": None,  # no network impairment
        "turn.ttfa_heard_ms": None,
    }
    assert set(turn["metrics"]) == set(TURN_METRICS)
    assert (turn["set_apart"], turn["validity"]) == ({}, "valid")
    assert turn["anchor_lateness_ms"] is None  # no chunk sent: nothing carried the anchor
    assert turn["anchor_window_end_ns"] == ms(2650)  # the reply's first frame
    assert turn["t_ss_ns"] == ms(1100) and turn["t_se_ns"] == ms(2100)
    assert turn["first_audio_ns"] == ms(2650) and turn["first_audible_ns"] == ms(2675)
    assert turn["thinking_ns"] == ms(2500)
    assert m.underflows == [{"start_ns": ms(2850), "end_ns": ms(2900), "ms": 50.0}]
    assert m.metrics["call.underflow_count"] == 1
    assert m.metrics["call.underflow_ms"] == 50.0
    assert m.outcome == "completed"


def test_stream_time_rounds_to_the_nearest_ns_at_44100() -> None:
    call = Call(rate=44100)
    call.event(
        100, "utterance.queued", step=0, kind="say", file="f", start_sample=0, speech_start_sample=1,
        speech_end_sample=3,
    )  # fmt: skip
    m = call.compute()
    assert m.turns[0]["t_ss_ns"] == ms(100) + 22676  # 22675.7 ns
    assert m.turns[0]["t_se_ns"] == ms(100) + 68027  # 68027.2 ns


def test_agent_audio_before_t_se_is_talk_over_not_a_reply() -> None:
    call = Call()
    call.utterance("say", (1000, 2000))  # t_ss 1100, t_se 2100
    call.state(1500, "speaking")
    call.frames(1500, 20)  # heard 1500 -> 1900, during the user's speech
    call.agent(1900, final=True)
    call.state(1901, "listening")
    call.state(2300, "thinking")
    call.state(2390, "speaking")
    call.frames(2400, 5)
    call.agent(2500, final=True)
    m = call.compute()
    turn = m.turns[0]
    assert turn["metrics"]["turn.talk_over_ms"] == 400.0
    assert turn["metrics"]["turn.ttfb_ms"] == 300.0
    assert turn["metrics"]["turn.ttfa_ms"] == 300.0
    assert turn["metrics"]["turn.agent_audio_ms"] == 100.0


def test_prebuffer_is_part_of_ttfa() -> None:
    call = Call(prebuffer_ms=60)
    call.utterance("say", (1000, 2000))
    call.state(2390, "speaking")
    call.frames(2400, 10)  # 60 ms are buffered at the third frame, at 2440
    call.agent(2600, final=True)
    turn = call.compute().turns[0]
    assert turn["metrics"]["turn.ttfb_ms"] == 300.0
    assert turn["metrics"]["turn.ttfa_ms"] == 340.0
    assert turn["metrics"]["turn.agent_audio_ms"] == 200.0


def test_missed_turn_is_counted_with_its_latencies_absent() -> None:
    call = Call()
    greeting(call)
    call.utterance("say", (1000, 2000), step=1)
    call.user(2300)
    call.state(2400, "thinking")
    call.utterance("say", (5000, 6000), step=2)  # t_ss 5100: no reply to the first before it
    call.state(6500, "thinking")
    call.state(6590, "speaking")
    call.frames(6600, 5)
    call.agent(6700, final=True)
    call.close(7000)
    m = call.compute()
    first, second = m.turns
    assert first["missed"] is True
    assert first["metrics"]["turn.ttfb_ms"] is None
    assert first["metrics"]["turn.ttfa_ms"] is None
    assert first["metrics"]["turn.thinking_ms"] is None
    assert first["metrics"]["turn.user_transcript_ms"] is None
    assert first["metrics"]["turn.agent_audio_ms"] == 0.0
    assert first["thinking_ns"] == ms(2400)  # the anchor is kept for diagnosis
    assert first["window_end_ns"] == ms(5100)
    assert second["missed"] is False
    assert second["metrics"]["turn.ttfb_ms"] == 500.0
    assert m.outcome == "failed:missed_turn"
    assert m.metrics["call.outcome"] == "failed:missed_turn"


def test_an_empty_frame_is_not_the_first_audio() -> None:
    call = Call()
    call.utterance("say", (1000, 2000))
    call.tl.frame_received(ms(2200), 0, -1, -1)
    call.frames(2400, 5)
    turn = call.compute().turns[0]
    assert turn["metrics"]["turn.ttfb_ms"] == 300.0
    assert turn["metrics"]["turn.ttfa_ms"] == 300.0


def test_silent_reply_is_a_missed_turn() -> None:
    call = Call()
    call.utterance("say", (1000, 2000))
    call.frames(2400, 5, first=-1, last=-1)
    m = call.compute()
    assert m.turns[0]["missed"] is True
    assert m.turns[0]["first_audio_ns"] == ms(2400)
    assert m.outcome == "failed:missed_turn"


def test_reply_dropped_by_a_clear_before_it_plays_is_missed() -> None:
    call = Call(prebuffer_ms=100)
    call.utterance("say", (1000, 2000))
    call.frames(2400, 2)
    call.clear(2430)
    assert call.compute().turns[0]["missed"] is True


# -- per barge-in ---------------------------------------------------------------------------------


def long_greeting_burst(call: Call) -> None:
    """2 s of agent audio arriving in 100 ms (a 30 s client buffer): heard from 1000 to 3000 ms."""
    call.state(999, "speaking")
    call.agent(1000)
    call.frames(1000, 100, every=1)


def test_barge_in_with_honoured_clear() -> None:
    call = Call(client_buffer_ms=30000)
    long_greeting_burst(call)
    call.utterance("barge_in", (1400, 2400), step=3)  # t_bi 1500, t_be 2500
    call.clear(1800)
    call.state(1801, "listening")
    call.agent(1802, final=True)
    call.state(2700, "thinking")
    call.state(2890, "speaking")
    call.frames(2900, 5, first=32)  # heard from 2902
    call.agent(3000, final=True)
    call.close(3500)
    m = call.compute()
    (b,) = m.barge_ins
    assert b["success"] is True and b["missed"] is False and b["step"] == 3
    assert b["metrics"] == {
        "interrupt.clear_ms": 300.0,
        "interrupt.last_audio_ms": -401.0,  # the whole utterance had arrived before the barge-in
        "interrupt.silence_ms": 300.0,
        "interrupt.talk_over_ms": 300.0,
        "interrupt.response_ms": 402.0,
    }
    assert set(b["metrics"]) == set(INTERRUPT_METRICS)
    assert (b["t_bi_ns"], b["t_be_ns"]) == (ms(1500), ms(2500))
    assert (b["clear_ns"], b["silent_ns"], b["response_ns"]) == (ms(1800), ms(1800), ms(2902))
    assert b["last_audio_ns"] == ms(1099)
    assert m.metrics["interrupt.success_pct"] == 100.0
    assert m.outcome == "completed"


def test_barge_in_max_buffer_exact() -> None:
    call = Call(client_buffer_ms=30000)
    long_greeting_burst(call)
    # At the last arrival (99 ms in) 99 ms * 16 = 1584 samples had started: 32000 - 1584 buffered.
    assert call.compute().metrics["call.max_buffered_ms"] == (32000 - 1584) / 16


def test_barge_in_without_clear_fails_when_the_utterance_plays_out() -> None:
    call = Call(client_buffer_ms=30000)
    long_greeting_burst(call)
    call.utterance("barge_in", (1400, 2400))
    call.agent(3000, final=True)
    call.state(3001, "listening")
    call.state(3100, "thinking")
    call.state(3190, "speaking")
    call.frames(3200, 5)
    m = call.compute()
    (b,) = m.barge_ins
    assert b["success"] is False
    assert b["metrics"]["interrupt.clear_ms"] is None
    assert b["metrics"]["interrupt.silence_ms"] == 1500.0
    assert b["metrics"]["interrupt.talk_over_ms"] == 1000.0
    assert b["metrics"]["interrupt.response_ms"] == 700.0
    assert m.metrics["interrupt.success_pct"] == 0.0


def test_barge_in_with_an_ignored_clear() -> None:
    call = Call(client_buffer_ms=30000, honor_clear=False)
    long_greeting_burst(call)
    call.utterance("barge_in", (1400, 2400))
    call.clear(1800)
    call.agent(1802, final=True)
    m = call.compute()
    (b,) = m.barge_ins
    # The server stopped (success), but this listener hears the buffer out: silent at 3000.
    assert b["success"] is True
    assert b["metrics"]["interrupt.clear_ms"] == 300.0
    assert b["metrics"]["interrupt.silence_ms"] == 1500.0
    assert b["metrics"]["interrupt.talk_over_ms"] == 1000.0
    assert b["metrics"]["interrupt.response_ms"] is None and b["missed"] is True


def test_barge_in_on_a_real_time_stream() -> None:
    # 60 ms client buffer: 3 frames ahead, then one every 20 ms; the server stops at the clear.
    call = Call()
    call.state(999, "speaking")
    call.frames(1000, 3, every=0)
    call.frames(1020, 38)  # the last arrives at 1760 and plays until 1820
    call.utterance("barge_in", (1400, 1700))  # t_bi 1500, t_be 1800
    call.clear(1790)
    call.state(1791, "listening")
    call.frames(2000, 3)
    m = call.compute()
    (b,) = m.barge_ins
    assert b["success"] is True
    assert b["metrics"]["interrupt.clear_ms"] == 290.0
    assert b["metrics"]["interrupt.last_audio_ms"] == 260.0
    assert b["metrics"]["interrupt.silence_ms"] == 290.0
    assert b["metrics"]["interrupt.talk_over_ms"] == 290.0
    assert b["metrics"]["interrupt.response_ms"] == 200.0
    assert m.underflows == []


def test_two_barge_ins_give_a_success_rate() -> None:
    call = Call(client_buffer_ms=30000)
    long_greeting_burst(call)
    call.utterance("barge_in", (1400, 1600), step=1)  # t_bi 1500: cleared at 1700
    call.clear(1700)
    call.state(1701, "listening")
    call.state(2000, "speaking")
    call.frames(2000, 100, every=1)  # heard 2000 -> 4000
    call.utterance("barge_in", (2400, 2600), step=2)  # t_bi 2500: never cleared
    call.agent(4000, final=True)
    m = call.compute()
    assert [b["success"] for b in m.barge_ins] == [True, False]
    assert m.barge_ins[0]["metrics"]["interrupt.response_ms"] == 300.0  # from t_be 1700 to 2000
    assert m.metrics["interrupt.success_pct"] == 50.0


def test_barge_in_with_nothing_to_interrupt_is_not_judged() -> None:
    call = Call()
    greeting(call)
    call.utterance("barge_in", (1400, 1600))
    m = call.compute()
    (b,) = m.barge_ins
    assert b["success"] is None
    assert b["metrics"]["interrupt.silence_ms"] is None
    assert b["metrics"]["interrupt.last_audio_ms"] is None
    assert m.metrics["interrupt.success_pct"] is None


# -- per call -------------------------------------------------------------------------------------


def test_call_metrics_exact() -> None:
    call = Call()
    greeting(call)
    call.tl.add(ms(200), "msg.out", message={"type": "ping", "timestamp": 1234.5})
    call.msg(230, type="pong", timestamp=1234.5)
    call.tl.add(ms(1200), "msg.out", message={"type": "ping", "timestamp": 1235.5})
    call.msg(1250, type="pong", timestamp=1235.5)
    call.msg(1260, type="pong", timestamp=99.0)  # matches no ping
    call.msg(1270, type="pong", timestamp="x")  # malformed
    for k in range(100):  # lateness k * 0.05 ms
        due = ms(Call.T0 + 20 * (k + 1))
        call.tl.chunk_sent(due, due + k * 50_000, k * 320, (k + 1) * 320)
    call.event(2200, "pacer.stopped", samples_sent=32000, samples_due=32000, drift_ms=0.5)
    call.close(5100)
    call.event(5200, "call.fetched", end_reason="hangup", ended="2026-01-01T00:00:05Z")
    m = call.compute()
    assert m.metrics["call.create_ms"] == 30.0  # second attempt: sent at 50, created at 80
    assert m.metrics["call.join_ms"] == 10.0
    assert m.metrics["call.started_ms"] == 12.0
    assert m.metrics["call.first_audio_ms"] == 60.0
    assert m.ping_rtts_ms == [30.0, 50.0]
    assert m.metrics["call.ping_rtt_ms"] == 40.0
    assert m.metrics["call.duration_ms"] == 5000.0
    assert m.metrics["call.max_buffered_ms"] == 20.0
    assert m.metrics["call.underflow_count"] == 0
    assert m.metrics["call.underflow_ms"] == 0.0
    assert m.metrics["call.end_reason"] == "hangup"
    assert m.metrics["pacer.lateness_p50_ms"] == pytest.approx(2.475)
    assert m.metrics["pacer.lateness_p99_ms"] == pytest.approx(4.9005)
    assert m.metrics["pacer.lateness_max_ms"] == pytest.approx(4.95)
    assert m.metrics["pacer.drift_ms"] == 0.5
    assert m.metrics["pacer.loop_lag_max_ms"] is None  # no loop.lag event
    assert m.metrics["interrupt.success_pct"] is None
    assert m.set_apart == {}
    assert m.outcome == "completed" and m.outcome_detail is None
    assert set(m.metrics) == set(CALL_METRICS)
    assert m.anchors["t0_ns"] == ms(100)
    assert m.anchors["ws_open_ns"] == ms(100)
    assert m.anchors["first_audible_ns"] == ms(160)
    assert m.anchors["create_sent_ns"] == ms(50)


def test_every_figure_has_a_glossary_entry() -> None:
    for name in CALL_METRICS + TURN_METRICS + INTERRUPT_METRICS:
        entry = GLOSSARY[name]
        assert entry["from"] and entry["to"] and entry["unit"]
        assert name.endswith(("_ms", "_count", "_pct")) or entry["unit"] == "text"


def paced(
    call: Call, late_ms: dict[int, float] | None = None, *, n: int = 100, drift_ms: float = 0.0
) -> None:
    """n chunks of 20 ms from t0 (chunk k: stream samples [320k, 320(k+1)), due at t0 + 20(k+1) ms),
    each sent on time but those of `late_ms` (chunk -> ms late); the pacer stops after them."""
    late_ms = late_ms or {}
    for k in range(n):
        due = ms(Call.T0 + 20 * (k + 1))
        call.tl.chunk_sent(due, due + ms(late_ms.get(k, 0)), k * 320, (k + 1) * 320)
    call.event(
        Call.T0 + 20 * n, "pacer.stopped", samples_sent=320 * n, samples_due=320 * n, drift_ms=drift_ms
    )


def replied(call: Call) -> None:
    """A turn spoken at stream 1000-2000 ms (t_se = 2100) answered by frames from 2400."""
    call.utterance("say", (1000, 2000))
    call.state(2390, "speaking")
    call.frames(2400, 5)
    call.agent(2500, final=True)


def test_a_late_stream_no_longer_invalidates_a_call_and_a_missed_turn_stays_missed() -> None:
    call = Call()
    call.utterance("say", (1000, 2000))  # never answered; its last speech sample is in chunk 99
    paced(call, {k: 30 for k in range(95, 100)})
    m = call.compute()
    # p99 of 95 zeros and 5 x 30 ms: rank 98.01 is between two 30 ms values. It once made the
    # whole call invalid; now only the figures anchored where the chunks were late are set apart.
    assert m.metrics["pacer.lateness_p99_ms"] == 30.0
    assert m.outcome == "failed:missed_turn"
    assert m.metrics["call.outcome"] == "failed:missed_turn"
    turn = m.turns[0]
    assert turn["missed"] is True
    assert turn["anchor_lateness_ms"] == 30.0  # recorded, but a missed turn is never set apart
    assert turn["anchor_window_end_ns"] == ms(2100 + 10_000)  # no reply: t_se + 10 s
    assert (turn["validity"], turn["set_apart"]) == ("valid", {})


def test_generator_overloaded_by_drift_even_with_a_missed_turn() -> None:
    call = Call()
    call.utterance("say", (1000, 2000))
    paced(call, drift_ms=-25)
    m = call.compute()
    assert m.outcome == "invalid:generator_overloaded"
    assert m.outcome_detail == "pacer drift -25.000 ms > one chunk"
    assert m.metrics["call.outcome"] == "invalid:generator_overloaded"


def test_tolerance_limits() -> None:
    call = Call()
    paced(call, drift_ms=20)  # exactly one chunk: tolerated
    assert call.compute().outcome == "completed"
    # Chunk 110 (due 2320) carries the turn's anchor until the reply's first frame at 2400.
    for late, validity, outcome in (
        (10.0, "valid", "completed"),  # exactly half a chunk: tolerated
        (10.001, "set_apart:anchor_late", "invalid:generator_overloaded"),  # its only anchored item
    ):
        call = Call()
        replied(call)
        paced(call, {110: late}, n=120)
        m = call.compute()
        turn = m.turns[0]
        assert turn["anchor_lateness_ms"] == late
        assert turn["validity"] == validity
        assert m.outcome == outcome
    assert m.outcome_detail == "all 1 anchored items set apart: anchor_late 1"
    assert turn["set_apart"] == {  # the measured latency figures, with their values
        "turn.ttfb_ms": {"value": 300.0, "reason": "anchor_late"},
        "turn.ttfa_ms": {"value": 300.0, "reason": "anchor_late"},
        "turn.agent_transcript_ms": {"value": 400.0, "reason": "anchor_late"},
        "turn.talk_over_ms": {"value": 0.0, "reason": "anchor_late"},
    }
    assert turn["metrics"] == {  # playback figures stand; unmeasured ones stay None
        "turn.thinking_ms": None,
        "turn.user_transcript_ms": None,
        "turn.agent_audio_ms": 100.0,
        "turn.underflow_count": 0,
        "turn.underflow_ms": 0.0,
        "turn.network_delay_ms": None,
        "turn.ttfa_heard_ms": None,
    }


def test_failed_outcomes() -> None:
    call = Call(setup=False)
    call.event(0, "call.create_sent", attempt=1)
    call.event(40, "call.create_answered", attempt=1, status=503)
    m = call.compute()
    assert m.outcome == "failed:create"
    assert m.metrics["call.create_ms"] is None and m.metrics["call.join_ms"] is None
    assert m.metrics["call.max_buffered_ms"] == 0.0
    assert m.outcome_detail == "the call was never created (last status 503)"

    # The create's own words reach the outcome: the status alone cannot say why no API answered.
    call = Call(setup=False)
    call.event(0, "call.create_sent", attempt=1)
    why = "cannot reach http://127.0.0.1:9/api/calls (connection refused)"
    call.event(10, "error", where="create", message=why, reason="unreachable")
    m = call.compute()
    assert (m.outcome, m.outcome_detail) == ("failed:create", f"the call was never created: {why}")

    call = Call()
    call.event(500, "error", where="session", message="boom")
    m = call.compute()
    assert m.outcome == "failed:error" and m.outcome_detail == "session: boom"

    # A join that failed is a connection that never opened, whatever the join's own words.
    call = Call(setup=False)
    call.event(0, "call.create_sent", attempt=1)
    call.event(80, "call.created", call_id="c1", join_url="ws://x")
    call.event(90, "ws.connect_started")
    call.event(95, "error", where="join", message="connection refused", reason="join_failed")
    m = call.compute()
    never_opened = "the websocket never opened: connection refused"
    assert (m.outcome, m.outcome_detail) == ("failed:connect", never_opened)

    call = Call()
    call.close(500, code=1011)
    assert call.compute().outcome == "failed:server_close"
    # A dropped socket is named as such, with the step it cut, though the step saw it first.
    call = Call()
    step = "script step 2 (wait_for)"
    call.event(499, "error", where=step, message="the socket closed during step 2", reason="closed_by_server")
    call.close(500, code=1006)
    m = call.compute()
    assert (m.outcome, m.outcome_detail) == (
        "failed:server_close",
        f"the server dropped the connection (1006, no close frame) ({step})",
    )
    # An error of its own before the server closed stays the cause.
    call = Call()
    call.event(400, "error", where="session", message="boom")
    call.close(500, code=1011)
    assert call.compute().outcome == "failed:error"
    for code, by in ((1000, "server"), (1001, "server"), (1006, "client")):
        call = Call()
        call.close(500, code=code, by=by)
        assert call.compute().outcome == "completed"

    call = Call()
    call.event(500, "expect.checked", step=2, ok=False, what="reply", detail="no reply in 5 s")
    m = call.compute()
    assert m.outcome == "failed:expect" and "no reply" in (m.outcome_detail or "")
    call = Call()
    call.event(500, "expect.checked", step=2, ok=True, what="reply", detail="")
    assert call.compute().outcome == "completed"

    call = Call(setup=False)
    call.event(80, "call.created", call_id="c", join_url="ws://x")
    call.event(90, "ws.connect_started")
    assert call.compute().outcome == "failed:connect"


def test_unknown_and_malformed_messages_do_not_crash() -> None:
    call = Call()
    greeting(call)
    call.msg(400, type="debug", message="x")
    call.msg(401, type="state")
    call.msg(402, type="state", state=None)
    call.msg(403, type="transcript")
    call.msg(404, foo=1)
    call.tl.add(ms(405), "msg.in", message="not a dict")
    call.tl.add(ms(406), "msg.in")
    call.tl.add(ms(407), "msg.out", message={"type": "ping"})
    call.event(408, "utterance.queued", step=9, kind="say")  # no positions: ignored
    m = call.compute()
    assert m.outcome == "completed"
    assert m.metrics["call.first_audio_ms"] == 60.0


def test_to_json_round_trips() -> None:
    call = Call(client_buffer_ms=30000)
    long_greeting_burst(call)
    call.utterance("say", (100, 200))
    call.utterance("barge_in", (1400, 2400))
    call.clear(1800)
    call.state(2890, "speaking")
    call.frames(2900, 5)
    call.close(3500)
    m = call.compute()
    data = json.loads(json.dumps(m.to_json()))
    assert data["metrics"]["call.outcome"] == m.outcome
    back = CallMetrics.from_json(data)
    assert back == m
    assert back.to_json() == m.to_json()


# -- properties -----------------------------------------------------------------------------------

NON_NEGATIVE = [
    "turn.ttfb_ms",
    "turn.ttfa_ms",
    "turn.thinking_ms",
    "turn.agent_transcript_ms",
    "turn.user_transcript_ms",
    "turn.agent_audio_ms",
    "turn.underflow_count",
    "turn.underflow_ms",
    "turn.talk_over_ms",
    "interrupt.clear_ms",
    "interrupt.silence_ms",
    "interrupt.talk_over_ms",
    "interrupt.response_ms",
    "call.create_ms",
    "call.join_ms",
    "call.started_ms",
    "call.first_audio_ms",
    "call.duration_ms",
    "call.max_buffered_ms",
    "call.underflow_count",
    "call.underflow_ms",
]


@st.composite
def random_calls(draw: st.DrawFn) -> Call:
    call = Call(
        client_buffer_ms=draw(st.sampled_from([60, 30000])),
        honor_clear=draw(st.booleans()),
        out_rate=draw(st.sampled_from([16000, 24000])),
    )
    # Scripted utterances one after the other on the stream.
    position = 0.0
    for step in range(draw(st.integers(0, 4))):
        position += draw(st.floats(50, 3000))
        length = draw(st.floats(100, 2000))
        call.utterance(draw(st.sampled_from(["say", "say", "barge_in"])), (position, position + length), step)
        position += length
    # Agent traffic: frames (mostly audible) and messages at random times.
    t = 100.0
    for _ in range(draw(st.integers(0, 120))):
        t += draw(st.sampled_from([0.0, 0.5, 5.0, 20.0, 20.0, 60.0, 400.0]))
        what = draw(st.sampled_from(["frame"] * 8 + ["clear", "final", "state", "thinking", "user", "junk"]))
        if what == "frame":
            samples = draw(st.integers(1, 960))
            first = draw(st.integers(0, samples - 1))
            call.tl.frame_received(ms(t), samples, first, draw(st.integers(first, samples - 1)))
        elif what == "clear":
            call.clear(t)
        elif what == "final":
            call.agent(t, final=True)
        elif what == "state":
            call.state(t, draw(st.sampled_from(["speaking", "listening", "idle"])))
        elif what == "thinking":
            call.state(t, "thinking")
        elif what == "user":
            call.user(t)
        else:
            call.msg(t, type=draw(st.sampled_from(["debug", "pong", "state", "transcript", None])))
    call.close(t + 10)
    return call


@settings(max_examples=200, deadline=None)
@given(random_calls())
def test_ttfa_is_never_before_ttfb_and_figures_are_never_negative(call: Call) -> None:
    m = call.compute()
    for turn in m.turns:
        f = turn["metrics"]
        if f["turn.ttfa_ms"] is not None:
            assert f["turn.ttfb_ms"] is not None
            assert f["turn.ttfa_ms"] >= f["turn.ttfb_ms"]
        assert turn["missed"] == (f["turn.ttfa_ms"] is None)
    figures = [m.metrics] + [t["metrics"] for t in m.turns] + [b["metrics"] for b in m.barge_ins]
    for figure in figures:
        for name in NON_NEGATIVE:
            value = figure.get(name)
            assert value is None or value >= 0, (name, value)
    pct = m.metrics["interrupt.success_pct"]
    assert pct is None or 0 <= pct <= 100
    assert m.metrics["call.underflow_count"] == sum(1 for _ in m.underflows)
    assert sum(t["metrics"]["turn.underflow_count"] for t in m.turns) <= m.metrics["call.underflow_count"]
    assert CallMetrics.from_json(json.loads(json.dumps(m.to_json()))) == m
