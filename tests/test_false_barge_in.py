"""`call.false_barge_in_count`: the agent stopped as if interrupted with no scripted cause (issue 14).

Timelines on a ms scale (tests/test_metrics.py's `Call`); the stream epoch t0 is at 100 ms, so a
scripted utterance at stream (a, b) ms is spoken from 100 + a to 100 + b.
"""

from __future__ import annotations

from tests.test_metrics import Call, greeting, ms
from tests.test_network_impairment import impaired
from uvbench.metrics.aggregate import aggregate
from uvbench.metrics.call import CLAIM_MS, CallMetrics


def long_greeting(call: Call, start: float = 140, seconds: float = 4) -> None:
    """An agent greeting arriving in real time from `start`, `seconds` long (not ended)."""
    call.state(start - 1, "speaking")
    call.agent(start)
    call.frames(start, int(seconds * 50))


def false_ones(m: CallMetrics) -> list[int]:
    return [f["clear_ns"] for f in m.false_barge_ins]


def test_a_clear_with_nobody_speaking_is_a_false_barge_in() -> None:
    call = Call(client_buffer_ms=1000)
    long_greeting(call)
    call.clear(1500)  # the room's noise, say: no scripted utterance, no message
    call.state(1501, "listening")
    call.close(3000)
    m = call.compute()
    assert m.metrics["call.false_barge_in_count"] == 1
    assert m.false_barge_ins == [{"clear_ns": ms(1500), "cut_from_ns": ms(140)}]


def test_a_scripted_barge_in_explains_its_clear() -> None:
    call = Call(client_buffer_ms=1000)
    long_greeting(call)
    call.utterance("barge_in", (1000, 1600), step=1)  # spoken 1100..1700
    call.clear(1400)
    call.state(1401, "listening")
    call.close(3000)
    m = call.compute()
    assert m.barge_ins[0]["success"] is True
    assert m.metrics["call.false_barge_in_count"] == 0 and m.false_barge_ins == []


def test_a_say_spoken_over_the_agent_explains_its_clear_up_to_the_claim_window() -> None:
    for clear_at, expected in ((1650, 0), (1700 + CLAIM_MS, 0), (1700 + CLAIM_MS + 1, 1)):
        call = Call(client_buffer_ms=1000)
        long_greeting(call)
        call.utterance("say", (1000, 1600), step=1)  # spoken 1100..1700 over the greeting
        call.clear(clear_at)
        call.close(4000)
        m = call.compute()
        assert m.metrics["call.false_barge_in_count"] == expected, clear_at


def test_a_reply_cut_after_the_turn_it_answers_is_a_false_barge_in() -> None:
    call = Call(client_buffer_ms=1000)
    greeting(call)
    call.utterance("say", (1000, 2000), step=1)  # t_se 2100
    call.state(2390, "speaking")
    call.agent(2400)
    call.frames(2400, 50)  # the reply starts after the turn's end...
    call.clear(2700)  # ...and stops within the claim window: the speech that ended cannot be why
    call.state(2701, "listening")
    call.close(4000)
    m = call.compute()
    assert (m.turns[0]["missed"], m.metrics["call.false_barge_in_count"]) == (False, 1)
    assert m.false_barge_ins == [{"clear_ns": ms(2700), "cut_from_ns": ms(2400)}]


def test_an_interrupting_message_explains_its_clear_and_a_ping_does_not() -> None:
    call = Call(client_buffer_ms=1000)
    long_greeting(call)
    call.tl.add(ms(900), "msg.out", message={"type": "ping", "timestamp": 1.0})
    call.tl.add(ms(1000), "msg.out", message={"type": "user_text_message", "text": "stop"})
    call.clear(1050)
    call.state(1060, "speaking")
    call.agent(1061)
    call.frames(1100, 50)
    call.tl.add(ms(1500), "msg.out", message={"type": "ping", "timestamp": 2.0})
    call.clear(1550)  # a ping interrupts nothing
    call.close(3000)
    m = call.compute()
    assert false_ones(m) == [ms(1550)]


def test_the_claim_window_runs_from_when_the_agent_could_hear_the_end_of_speech() -> None:
    call = Call(client_buffer_ms=1000)
    long_greeting(call, seconds=6)
    call.utterance("say", (1000, 2000), step=1)  # t_se 2100: its last sample in chunk 99
    # The link holds the end of speech 800 ms: the agent has it at 2900, so a clear at 3800
    # (1700 ms past t_se, 900 past the release) is the speech's doing.
    impaired(call, {k: 800 for k in range(99, 150)}, n=150)
    call.clear(3800)
    call.close(6000)
    assert call.compute().metrics["call.false_barge_in_count"] == 0
    call.tl.audio_out_release = type(call.tl.audio_out_release)("q")  # unimpaired: past the window
    assert call.compute().metrics["call.false_barge_in_count"] == 1


def test_no_socket_no_figure_and_the_rate_counts_calls_with_one() -> None:
    never = Call(setup=False)
    assert never.compute().metrics["call.false_barge_in_count"] is None
    records = [
        {"outcome": "completed", "metrics": {"call.false_barge_in_count": n}, "turns": [], "barge_ins": []}
        for n in (0, 2, 0, 1)
    ]
    rate = aggregate(records).rates["call.false_barge_in_rate"]
    assert (rate.numerator, rate.denominator) == (2, 4)
    assert aggregate(records).metrics["call.false_barge_in_count"].mean == 0.75


def test_the_record_keeps_the_list_and_it_round_trips() -> None:
    call = Call(client_buffer_ms=1000)
    long_greeting(call)
    call.clear(1500)
    call.close(3000)
    m = call.compute()
    back = CallMetrics.from_json(m.to_json())
    assert back.false_barge_ins == m.false_barge_ins and len(back.false_barge_ins) == 1
    assert CallMetrics.from_json({"metrics": {}}).false_barge_ins == []  # an older record
