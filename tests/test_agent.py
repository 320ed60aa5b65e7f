"""The simulated agent as a sans-I/O machine, driven with a fake clock."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import numpy as np
import pytest

from uvbench.server.agent import ECHO_MAX_CHARS, Agent
from uvbench.server.config import MAX_SPOKEN_TEXT_CHARS, AgentBehaviour, Faults, Latency, Stall, ToolCall
from uvbench.server.store import CallRecord

MS = 1_000_000
T0 = 1_000_000 * MS  # an arbitrary monotonic origin


@dataclass(frozen=True, eq=False)  # hashed by identity, like the real (cached) Speech
class FakeSpeech:
    pcm: np.ndarray
    sample_rate: int
    text: str
    words: tuple[str, ...]
    word_starts: tuple[int, ...]


def fake_synth(text: str, rate: int, wpm: int) -> FakeSpeech:
    """Speech of 300 ms a word (a loud tone), words starting on those boundaries."""
    words = tuple(text.split())
    per_word = int(0.3 * rate)
    t = np.arange(per_word * len(words)) / rate
    pcm = (np.sin(2 * np.pi * 220 * t) * 8000).astype(np.int16)
    return FakeSpeech(pcm, rate, text, words, tuple(i * per_word for i in range(len(words))))


def make_agent(
    *,
    rate: int = 16000,
    out_rate: int | None = None,
    buffer_ms: int = 60,
    latency_ms: float = 200.0,
    greeting: str = "hello there friend",
    replies: tuple[str, ...] = ("one two three four five six",),
    first_speaker: str = "agent",
    tool_calls: tuple[ToolCall, ...] = (),
    faults: Faults | None = None,
    chunk_ms: int = 20,
    synth: object = fake_synth,
    **request: object,
) -> Agent:
    medium = {
        "inputSampleRate": rate,
        "outputSampleRate": out_rate or rate,
        "clientBufferSizeMs": buffer_ms,
        **(request.pop("medium_extra", None) or {}),
    }
    body = {"medium": {"serverWebSocket": medium}, **request}
    if first_speaker == "user":
        body["firstSpeakerSettings"] = {"user": {}}
    record = CallRecord(
        call_id="00000000-0000-4000-8000-000000000001",
        request=body,
        created_ns=T0,
        created=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        join_url="ws://x",
        agent=AgentBehaviour(
            greeting=greeting,
            replies=replies,
            latency=Latency(kind="fixed", ms=latency_ms),
            tool_calls=tool_calls,
            chunk_ms=chunk_ms,
        ),
        faults=faults or Faults(),
    )
    return Agent(record, synth, wall=lambda ns: dt.datetime(2026, 1, 1, tzinfo=dt.UTC))


@dataclass
class Sent:
    at: int
    kind: str
    payload: object


class Driver:
    """Runs an agent against a scripted client: audio in 20 ms chunks, timers honoured exactly."""

    def __init__(self, agent: Agent, rate: int = 16000, chunk_ms: int = 20) -> None:
        self.agent = agent
        self.rate = rate
        self.chunk = rate * chunk_ms // 1000
        self.chunk_ns = chunk_ms * MS
        self.now = T0
        self.sent: list[Sent] = []
        self.audio_plan: list[np.ndarray] = []
        self.next_audio_ns = T0 + self.chunk_ns  # a chunk leaves once its last sample exists
        self.stream = np.zeros(0, dtype=np.int16)
        self.stream_pos = 0
        agent.start(self.now)
        self._collect()

    def _collect(self) -> None:
        # Like the websocket shell: everything is written at once, and the agent is told when.
        for item in self.agent.drain():
            self.sent.append(Sent(self.now, item.kind, item.payload))
            if item.on_sent is not None:
                item.on_sent(self.now)

    def say(self, seconds: float, amplitude: int = 8000) -> tuple[int, int]:
        """Queue speech (a tone) on the input stream; returns its stream sample bounds."""
        n = int(seconds * self.rate)
        t = np.arange(n) / self.rate
        start = self.stream.size
        self.stream = np.concatenate(
            (self.stream, (np.sin(2 * np.pi * 300 * t) * amplitude).astype(np.int16))
        )
        return start, start + n

    def silence(self, seconds: float) -> None:
        self.stream = np.concatenate((self.stream, np.zeros(int(seconds * self.rate), dtype=np.int16)))

    def run_until(self, end_ns: int) -> None:
        while self.now < end_ns and not self.agent.ended:
            deadline = self.agent.next_deadline_ns()
            if deadline is not None and deadline <= self.next_audio_ns and deadline <= end_ns:
                self.now = max(self.now, deadline)
                self.agent.tick(self.now)
            elif self.next_audio_ns <= end_ns:
                self.now = self.next_audio_ns
                piece = self.stream[self.stream_pos : self.stream_pos + self.chunk]
                if piece.size < self.chunk:
                    piece = np.concatenate((piece, np.zeros(self.chunk - piece.size, dtype=np.int16)))
                self.stream_pos += self.chunk
                self.agent.on_audio(self.now, piece.tobytes())
                self.next_audio_ns += self.chunk_ns
            else:
                self.now = end_ns
            self._collect()

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + int(seconds * 1e9))

    def messages(self, type_: str | None = None) -> list[Sent]:
        return [s for s in self.sent if s.kind == "json" and (type_ is None or s.payload["type"] == type_)]

    def audio(self) -> list[Sent]:
        return [s for s in self.sent if s.kind == "audio"]

    def states(self) -> list[str]:
        return [s.payload["state"] for s in self.messages("state")]

    def send(self, message: dict) -> None:
        self.agent.on_text(self.now, json.dumps(message))
        self._collect()

    def stream_ns(self, sample: int) -> int:
        """When the client's stream delivered `sample` (its chunk's send time)."""
        return T0 + (sample // self.chunk + 1) * self.chunk_ns


def mistakes(agent: Agent) -> list[str]:
    """The client's mistakes the agent reported, as the call's warning events say them."""
    return [e["text"] for e in agent.record.events if e["type"] == "client_message_error"]


SERVER_MESSAGE_TYPES = {
    "call_started",
    "state",
    "transcript",
    "client_tool_invocation",
    "playback_clear_buffer",
    "pong",
    "debug",
}
"""What the documented server sends by default (as Ultravox documents them, `debug` when asked for)."""


def test_greeting_is_paced_to_the_client_buffer():
    agent = make_agent(buffer_ms=60, latency_ms=200)
    d = Driver(agent)
    d.run_for(2.0)
    assert d.messages()[0].payload == {"type": "call_started", "callId": agent.record.call_id}
    audio = d.audio()
    greeting = agent.truth.replies[0]
    assert greeting.first_byte_ns == T0 + 200 * MS
    assert audio[0].at == T0 + 200 * MS
    # 60 ms buffer, 20 ms chunks: three chunks at once, then one every 20 ms of playback, each
    # aimed 1 ms after the buffer has room (so an early timer cannot overfill the client).
    assert [a.at - audio[0].at for a in audio[:6]] == [0, 0, 0, 21 * MS, 41 * MS, 61 * MS]
    assert sum(len(a.payload) for a in audio) // 2 == greeting.total_samples == 3 * int(0.3 * 16000)
    # The writes of every frame up to the one holding the first audible sample are kept.
    chunk = 16000 * 20 // 1000
    assert greeting.frame_samples == chunk
    assert greeting.lead_writes_ns == [a.at for a in audio[: greeting.first_audible_sample // chunk + 1]]
    # Playback ends 900 ms after the first byte; then the final transcript and "listening".
    assert greeting.playback_end_ns == T0 + 1100 * MS
    final = d.messages("transcript")[-1]
    assert final.payload == {
        "type": "transcript",
        "role": "agent",
        "medium": "voice",
        "text": "hello there friend",
        "final": True,
        "ordinal": 0,
    }
    assert final.at == T0 + 1100 * MS
    assert d.states() == ["listening", "speaking", "listening"]
    assert max(agent.truth.pacing_lateness_ms) == 0


def test_large_buffer_sends_the_whole_utterance_at_once_and_deltas_follow_playback():
    agent = make_agent(buffer_ms=30000, latency_ms=100)
    d = Driver(agent)
    d.run_for(2.0)
    audio = d.audio()
    assert {a.at for a in audio} == {T0 + 100 * MS}
    deltas = [m for m in d.messages("transcript") if not m.payload["final"]]
    assert [m.payload["delta"] for m in deltas] == ["hello", " there", " friend"]
    assert [m.at - T0 for m in deltas] == [100 * MS, 400 * MS, 700 * MS]


def test_user_turn_is_endpointed_after_the_endpoint_delay_and_answered_after_the_latency():
    agent = make_agent(first_speaker="user", latency_ms=250)
    d = Driver(agent)
    d.silence(0.5)
    _, end = d.say(1.0)
    d.silence(3.0)
    d.run_for(4.0)
    turn = agent.truth.turns[0]
    # The speech ends at 1.5 s = 46.875 frames of 512 samples: frame 46 holds the end and counts
    # as speech, then 12 silent frames (384 ms) end the turn.
    assert end == 24000 and turn.speech_end_sample == 47 * 512
    frames_end_sample = (47 + 12) * 512
    assert turn.end_decided_ns == d.stream_ns(frames_end_sample - 1)
    user = d.messages("transcript")[0]
    assert user.payload["role"] == "user" and user.payload["final"] and user.at == turn.end_decided_ns
    reply = agent.truth.replies[turn.reply_index]
    assert reply.first_byte_ns == turn.end_decided_ns + 250 * MS
    assert d.states() == ["listening", "thinking", "speaking", "listening"]
    assert d.messages("transcript")[-1].payload["ordinal"] == 1


def test_barge_in_clears_the_buffer_and_truncates_the_transcript():
    agent = make_agent(buffer_ms=30000, latency_ms=100, greeting="a b c d e f g h i j")
    d = Driver(agent)
    d.silence(1.0)  # the greeting plays from 100 ms
    start, _ = d.say(0.5)
    d.silence(2.0)
    d.run_for(2.5)
    clear = d.messages("playback_clear_buffer")
    assert len(clear) == 1
    truth = agent.truth.clears[0]
    first_frame = start // 512
    assert truth.cause == "barge_in" and truth.speech_start_sample == first_frame * 512
    # 0.09 s minimum interruption = 3 speech frames (96 ms): decided when the third one arrives.
    assert truth.sent_ns == d.stream_ns((first_frame + 3) * 512 - 1)
    greeting = agent.truth.replies[0]
    assert greeting.interrupted and greeting.clear_sent_ns == truth.sent_ns
    played_s = greeting.played_samples / 16000
    assert played_s == pytest.approx((truth.sent_ns - greeting.first_byte_ns) / 1e9)
    final = [m for m in d.messages("transcript") if m.payload["role"] == "agent" and m.payload["final"]][0]
    heard = int(played_s // 0.3) + 1
    assert final.payload["text"] == " ".join("a b c d e f g h i j".split()[:heard])
    # Clear, then the truncated final transcript, then "listening": a transcript after
    # "listening" would open an empty generation in LiveKit's client.
    after_clear = [m.payload for m in d.messages() if m.at >= truth.sent_ns][:3]
    assert [m["type"] for m in after_clear] == ["playback_clear_buffer", "transcript", "state"]
    assert after_clear[1]["final"] and after_clear[2]["state"] == "listening"
    # The interrupting speech is a turn of its own and gets a reply.
    assert agent.truth.turns[0].speech_start_sample == first_frame * 512
    assert agent.truth.replies[1].first_byte_ns is not None


def test_short_speech_over_the_agent_does_not_interrupt():
    agent = make_agent(buffer_ms=30000, latency_ms=100, greeting="a b c d e f g h i j")
    d = Driver(agent)
    d.silence(1.0)
    d.say(0.03)  # at most two 32 ms frames: below the 90 ms minimum
    d.silence(3.0)
    d.run_for(3.5)
    assert not d.messages("playback_clear_buffer")
    assert not agent.truth.turns
    assert not agent.truth.replies[0].interrupted


def test_client_tool_round_trip():
    tool = {
        "temporaryTool": {
            "modelToolName": "lookupOrder",
            "description": "x",
            "client": {},
            "timeout": "5s",
        }
    }
    agent = make_agent(
        first_speaker="user",
        latency_ms=100,
        tool_calls=(ToolCall(1, "lookupOrder", {"id": "42"}),),
        selectedTools=[tool],
    )
    d = Driver(agent)
    d.say(0.5)
    d.silence(1.0)
    d.run_for(1.2)
    invocation = d.messages("client_tool_invocation")
    assert len(invocation) == 1
    payload = invocation[0].payload
    assert payload["toolName"] == "lookupOrder" and payload["parameters"] == {"id": "42"}
    assert not d.audio()
    d.send({"type": "client_tool_result", "invocationId": payload["invocationId"], "result": "shipped"})
    d.silence(3.0)
    d.run_for(3.0)
    reply = agent.truth.replies[-1]
    assert reply.kind == "tool_reply" and reply.text == "The tool answered: shipped"
    assert reply.first_byte_ns is not None
    roles = [m["role"] for m in agent.record.messages]
    assert roles == [
        "MESSAGE_ROLE_USER",
        "MESSAGE_ROLE_TOOL_CALL",
        "MESSAGE_ROLE_TOOL_RESULT",
        "MESSAGE_ROLE_AGENT",
    ]


def test_client_tool_timeout_and_hang_up_result():
    tool = {"temporaryTool": {"modelToolName": "slow", "client": {}, "timeout": "1s"}}
    agent = make_agent(
        first_speaker="user",
        latency_ms=100,
        tool_calls=(ToolCall(1, "slow"),),
        selectedTools=[tool],
    )
    d = Driver(agent)
    d.say(0.5)
    d.silence(4.0)
    d.run_for(4.0)
    assert [e["type"] for e in agent.record.events if e["type"] == "tool_timeout"] == ["tool_timeout"]
    assert agent.truth.replies[-1].text == "Sorry, that took too long."

    agent = make_agent(
        first_speaker="user",
        latency_ms=100,
        tool_calls=(ToolCall(1, "slow"),),
        selectedTools=[tool],
    )
    d = Driver(agent)
    d.say(0.5)
    d.silence(1.0)
    d.run_for(1.2)
    invocation = d.messages("client_tool_invocation")[0].payload
    d.send(
        {
            "type": "client_tool_result",
            "invocationId": invocation["invocationId"],
            "result": "{}",
            "responseType": "hang-up",
        }
    )
    assert agent.ended and agent.end_reason == "agent_hangup"
    assert d.sent[-1].kind == "close"


def test_ping_text_messages_and_bad_input():
    agent = make_agent(first_speaker="user", latency_ms=100)
    d = Driver(agent)
    d.send({"type": "ping", "timestamp": 12345.678901})
    assert d.messages("pong")[0].payload == {"type": "pong", "timestamp": 12345.678901}
    d.agent.on_text(d.now, "{not json")
    d.send({"type": "no_such_message"})
    d.send({"no": "type"})
    d._collect()
    errors = mistakes(agent)
    assert len(errors) == 3
    assert "not JSON" in errors[0] and "'no_such_message'" in errors[1] and "type" in errors[2]
    d.send({"type": "user_text_message", "text": "hi there", "urgency": "soon"})
    echo = d.messages("transcript")[0].payload
    assert echo == {
        "type": "transcript",
        "role": "user",
        "medium": "text",
        "text": "hi there",
        "final": True,
        "ordinal": 0,
    }
    d.run_for(0.5)
    assert agent.truth.replies[0].first_byte_ns == T0 + 100 * MS
    # Legacy form with deferResponse: recorded, no reply.
    d.send({"type": "input_text_message", "text": "later", "deferResponse": True})
    assert len(agent.truth.replies) == 1


def test_text_output_medium_sends_text_and_no_audio():
    agent = make_agent(first_speaker="agent", latency_ms=100, initialOutputMedium="MESSAGE_MEDIUM_TEXT")
    d = Driver(agent)
    d.run_for(0.5)
    assert not d.audio()
    finals = [m.payload for m in d.messages("transcript") if m.payload["final"]]
    assert finals == [
        {
            "type": "transcript",
            "role": "agent",
            "medium": "text",
            "text": "hello there friend",
            "final": True,
            "ordinal": 0,
        }
    ]


def test_disabled_data_messages_are_not_sent():
    agent = make_agent(latency_ms=100)
    agent.settings.data_messages["state"] = False
    d = Driver(agent)
    d.run_for(1.5)
    assert not d.messages("state")
    assert d.messages("transcript")


def test_max_duration_speaks_the_message_then_closes():
    agent = make_agent(first_speaker="user", maxDuration="1s", timeExceededMessage="time is up")
    d = Driver(agent)
    d.run_for(3.0)
    assert agent.end_reason == "timeout"
    assert d.sent[-1].kind == "close" and d.sent[-1].payload == (1000, "call ended: timeout")
    said = agent.truth.replies[-1]
    assert said.text == "time is up" and said.first_byte_ns == T0 + 1000 * MS
    assert d.sent[-1].at == said.playback_end_ns


def test_hang_up_message_speaks_then_ends_agent_hangup():
    agent = make_agent(first_speaker="user")
    d = Driver(agent)
    d.send({"type": "hang_up", "message": "bye now"})
    d.run_for(2.0)
    assert agent.end_reason == "agent_hangup"
    assert agent.truth.replies[-1].text == "bye now"


def test_output_stall_fault_delays_audio_and_shows_in_playback():
    faults = Faults(output_stalls=(Stall(after_ms=200, duration_ms=300),))
    agent = make_agent(buffer_ms=60, latency_ms=100, faults=faults)
    d = Driver(agent)
    d.run_for(2.0)
    audio = d.audio()
    gaps = [b.at - a.at for a, b in zip(audio, audio[1:], strict=False)]
    assert max(gaps) >= 300 * MS
    # The client underflowed: playback ended later than 900 ms of audio would take.
    greeting = agent.truth.replies[0]
    assert greeting.playback_end_ns - greeting.first_byte_ns > 1100 * MS


def test_odd_length_frames_are_stitched_and_reported_once():
    agent = make_agent(first_speaker="user")
    d = Driver(agent)
    agent.on_audio(d.now, b"\x01\x02\x03")
    agent.on_audio(d.now, b"\x04\x05\x06")
    agent.on_audio(d.now, b"")
    d._collect()
    assert agent.truth.input.samples_received == 3
    assert agent.truth.input.empty_frames == 1
    assert len(mistakes(agent)) == 1


def test_input_audio_far_ahead_of_real_time_ends_the_call_without_being_kept():
    """A client may buffer a little, not stream faster than real time without end: past
    INPUT_AHEAD_MAX_S the call ends (close 1008, the reason naming the limit) and the audio is not
    taken in."""
    from uvbench.server.agent import INPUT_AHEAD_MAX_S

    agent = make_agent(first_speaker="user", recordingEnabled=True)
    d = Driver(agent)
    second = np.zeros(16000, dtype=np.int16).tobytes()
    for _ in range(int(INPUT_AHEAD_MAX_S)):  # ten seconds at once: still within the limit
        agent.on_audio(d.now, second)
    assert not agent.ended and agent.truth.input.samples_received == 16000 * int(INPUT_AHEAD_MAX_S)
    d.now += 500 * MS
    agent.on_audio(d.now, second)  # 11 s of audio half a second after the first
    d._collect()
    assert agent.ended and agent.end_reason == "connection_error"
    assert agent.truth.input.samples_received == 16000 * int(INPUT_AHEAD_MAX_S)  # not taken in
    assert len(agent.input_pcm) == 2 * 16000 * int(INPUT_AHEAD_MAX_S)
    (error,) = mistakes(agent)
    assert "10.5 s ahead of real time" in error and "limit of 10 s" in error
    (close,) = [s.payload for s in d.sent if s.kind == "close"]
    assert close == (1008, error) and len(error.encode()) <= 123  # a close reason's limit
    agent.on_audio(d.now, second)  # an ended call takes nothing more
    assert agent.truth.input.samples_received == 16000 * int(INPUT_AHEAD_MAX_S)


def test_a_flood_of_client_mistakes_is_counted_not_kept():
    from uvbench.server.agent import CLIENT_ERRORS_REPORTED

    agent = make_agent(first_speaker="user")
    d = Driver(agent)
    for _ in range(20_000):
        agent.on_text(d.now, "{not json")
    d._collect()
    assert agent.truth.input.client_errors == 20_000
    kept = mistakes(agent)
    assert len(kept) == CLIENT_ERRORS_REPORTED
    assert "later ones are counted, not reported" in kept[-1]
    agent.on_text(d.now, json.dumps({"type": "ping", "timestamp": 5}))  # still served
    d._collect()
    assert d.messages("pong")[-1].payload["timestamp"] == 5


def test_a_calls_events_are_bounded():
    from uvbench.server.store import MAX_EVENTS

    agent = make_agent(first_speaker="user")
    record = agent.record
    before = len(record.events)  # the call's own (joined, state)
    for k in range(MAX_EVENTS + 500):
        record.add_event(T0 + k, dt.datetime(2026, 1, 1, tzinfo=dt.UTC), "info", "x", f"event {k}")
    assert len(record.events) == MAX_EVENTS + 1
    assert record.events[-1]["type"] == "events_truncated"
    assert record.events_dropped == before + 500


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
def test_vad_frames_are_exact_on_every_rate(rate):
    agent = make_agent(rate=rate, first_speaker="user", latency_ms=100)
    d = Driver(agent, rate=rate, chunk_ms=10)
    start, end = d.say(0.8)
    d.silence(1.0)
    d.run_for(1.5)
    turn = agent.truth.turns[0]
    assert turn.speech_start_sample == start == 0
    assert abs(turn.speech_end_sample - end) <= rate * 0.032


def test_media_idle_timeout_ends_the_call_connection_error():
    agent = make_agent(first_speaker="user", medium_extra={"mediaIdleTimeout": "3s"})
    assert agent.settings.media_idle_s == 10.0  # values below 10 s count as 10 s
    d = Driver(agent)
    d.run_for(1.0)  # audio flows
    d.next_audio_ns = 10**30  # the client stops sending
    d.run_for(12.0)
    assert agent.end_reason == "connection_error"
    assert d.sent[-1].kind == "close"
    last_audio = agent.truth.input.last_audio_ns
    assert d.sent[-1].at == last_audio + 10 * 1_000_000_000


def test_user_first_speaker_fallback_and_agent_greeting_text_and_delay():
    agent = make_agent(first_speaker="user")
    agent.settings.first_speaker = {"user": {"fallback": {"delay": "2s", "text": "are you there"}}}
    d = Driver(agent)
    d.run_for(3.0)
    assert agent.truth.replies[0].kind == "fallback" and agent.truth.replies[0].text == "are you there"
    assert agent.truth.replies[0].first_byte_ns == T0 + 2200 * MS

    # Speaking before the fallback delay cancels it.
    agent = make_agent(first_speaker="user", latency_ms=100)
    agent.settings.first_speaker = {"user": {"fallback": {"delay": "2s", "text": "are you there"}}}
    d = Driver(agent)
    d.say(0.5)
    d.silence(3.0)
    d.run_for(3.0)
    assert [r.kind for r in agent.truth.replies] == ["reply"]

    agent = make_agent(latency_ms=100)
    agent.settings.first_speaker = {"agent": {"text": "welcome aboard", "delay": "1s"}}
    d = Driver(agent)
    d.run_for(2.0)
    assert agent.truth.replies[0].text == "welcome aboard"
    assert agent.truth.replies[0].first_byte_ns == T0 + 1100 * MS


def test_set_output_medium_applies_from_the_next_utterance():
    agent = make_agent(latency_ms=100, buffer_ms=30000)
    d = Driver(agent)
    d.run_for(0.2)  # the greeting is playing (voice)
    d.send({"type": "set_output_medium", "medium": "text"})
    d.send({"type": "user_text_message", "text": "question", "urgency": "soon"})
    d.run_for(2.0)
    greeting, reply = agent.truth.replies
    assert greeting.medium == "voice" and greeting.total_samples > 0
    assert reply.medium == "text" and reply.total_samples == 0
    agent_finals = [
        m.payload for m in d.messages("transcript") if m.payload["role"] == "agent" and m.payload["final"]
    ]
    assert [m["medium"] for m in agent_finals] == ["voice", "text"]
    # "soon" waited for the greeting to end before answering.
    assert reply.first_byte_ns >= greeting.playback_end_ns
    d.send({"type": "set_output_medium", "medium": "loud"})
    assert "set_output_medium" in mistakes(agent)[-1]


def test_forced_agent_message_immediate_interrupts_and_uninterruptible_resists_barge_in():
    agent = make_agent(latency_ms=100, buffer_ms=30000, greeting="a b c d e f g h")
    d = Driver(agent)
    d.run_for(0.5)
    d.send(
        {
            "type": "forced_agent_message",
            "content": "x y z w v u",
            "urgency": "immediate",
            "uninterruptible": True,
        }
    )
    clears = agent.truth.clears
    assert len(clears) == 1 and clears[0].cause == "forced_agent_message"
    forced = agent.truth.replies[-1]
    assert forced.kind == "forced" and forced.first_byte_ns == d.now
    d.say(0.6)  # tries to barge in
    d.silence(3.0)
    d.run_for(3.0)
    assert not forced.interrupted and len(agent.truth.clears) == 1


def test_output_jitter_fault_spreads_frames_but_sends_everything():
    faults = Faults(output_jitter_ms=15)
    agent = make_agent(buffer_ms=60, latency_ms=100, faults=faults)
    d = Driver(agent)
    d.run_for(2.0)
    audio = d.audio()
    gaps = [b.at - a.at for a, b in zip(audio[3:], audio[4:], strict=False)]
    assert max(gaps) > 25 * MS and min(gaps) < 15 * MS
    assert sum(len(a.payload) for a in audio) // 2 == agent.truth.replies[0].total_samples


def test_audio_stops_after_the_call_ends():
    agent = make_agent(first_speaker="user")
    d = Driver(agent)
    d.send({"type": "hang_up"})
    assert agent.ended and agent.next_deadline_ns() is None
    agent.on_audio(d.now, b"\x00\x00" * 320)
    agent.on_text(d.now, '{"type": "ping", "timestamp": 1}')
    assert agent.drain() == []


def test_vad_settings_are_honoured():
    # A longer endpoint delay: 20 frames (0.64 s) of silence end the turn.
    agent = make_agent(first_speaker="user", vadSettings={"turnEndpointDelay": "0.64s"})
    d = Driver(agent)
    _, end = d.say(0.64)  # exactly 20 frames
    d.silence(2.0)
    d.run_for(2.0)
    turn = agent.truth.turns[0]
    assert turn.speech_end_sample == end == 20 * 512
    assert turn.end_decided_ns == d.stream_ns((20 + 20) * 512 - 1)

    # Speech shorter than minimumTurnDuration is ignored.
    agent = make_agent(first_speaker="user", vadSettings={"minimumTurnDuration": "0.5s"})
    d = Driver(agent)
    d.say(0.3)
    d.silence(1.5)
    d.run_for(1.5)
    assert not agent.truth.turns and not agent.truth.replies
    assert any(e["type"] == "speech_ignored" for e in agent.record.events)

    # A high frameActivationThreshold ignores quiet speech that the default hears.
    for threshold, heard in ((0.1, True), (0.9, False)):
        agent = make_agent(first_speaker="user", vadSettings={"frameActivationThreshold": threshold})
        d = Driver(agent)
        d.say(0.5, amplitude=300)  # about -43 dBFS RMS
        d.silence(1.0)
        d.run_for(1.5)
        assert bool(agent.truth.turns) is heard

    # A longer minimumInterruptionDuration needs more speech to cut the agent off.
    agent = make_agent(
        buffer_ms=30000,
        latency_ms=100,
        greeting="a b c d e f g h i j",
        vadSettings={"minimumInterruptionDuration": "0.3s"},
    )
    d = Driver(agent)
    d.silence(1.0)
    start, _ = d.say(0.6)
    d.silence(1.0)
    d.run_for(2.0)
    first_frame = start // 512
    assert agent.truth.clears[0].sent_ns == d.stream_ns((first_frame + 10) * 512 - 1)  # 10 frames = 320 ms


def test_input_audio_ahead_of_real_time_is_an_overflow_warning():
    agent = make_agent(first_speaker="user")
    d = Driver(agent)
    agent.on_audio(d.now + 1 * MS, b"\x00\x00" * 320)
    agent.on_audio(d.now + 2 * MS, b"\x00\x00" * 16000)  # a second of audio at once
    overflow = [e for e in agent.record.events if e["type"] == "audio_overflow"]
    assert len(overflow) == 1 and overflow[0]["severity"] == "warning"
    assert agent.truth.input.max_surplus_ms > 900


def test_latency_draws_are_seeded_and_follow_the_distribution():
    import random

    from uvbench.server.config import Latency

    lognormal = Latency(kind="lognormal", ms=400, sigma=0.3)
    a = [lognormal.draw(random.Random(7)) for _ in range(3)]
    assert a == [lognormal.draw(random.Random(7)) for _ in range(3)]
    rng = random.Random(1)
    draws = sorted(lognormal.draw(rng) for _ in range(4000))
    assert draws[2000] == pytest.approx(400, rel=0.05)  # the median is `ms`
    uniform = Latency(kind="uniform", min_ms=100, max_ms=200)
    assert all(100 <= uniform.draw(rng) <= 200 for _ in range(200))
    assert Latency(kind="normal", ms=50, sd_ms=500, min_ms=20).draw(rng) >= 20


def test_client_mistakes_are_reported_without_an_undocumented_message_type():
    """LiveKit logs every message type it does not know as an error: a mistake is a warning call
    event, and a `debug` message only to a client that asked for debug messages."""
    agent = make_agent(first_speaker="user")
    d = Driver(agent)
    d.agent.on_text(d.now, "{not json")
    d.send({"type": "no_such_message"})
    d._collect()
    assert len(mistakes(agent)) == 2 and agent.truth.input.client_errors == 2
    assert {m.payload["type"] for m in d.messages()} <= SERVER_MESSAGE_TYPES - {"debug"}

    agent = make_agent(first_speaker="user")
    agent.settings.data_messages["debug"] = True  # as experimentalMessages=debug does
    d = Driver(agent)
    d.send({"type": "no_such_message"})
    (debug,) = [m.payload for m in d.messages("debug") if "client_message_error" in m.payload["message"]]
    assert debug == {
        "type": "debug",
        "message": "client_message_error: unknown data message type 'no_such_message'",
    }
    assert {m.payload["type"] for m in d.messages()} <= SERVER_MESSAGE_TYPES


def test_an_empty_user_text_message_asks_the_agent_to_take_its_turn():
    """LiveKit's generate_reply() without instructions sends {"text": ""} and waits 5 s for the
    agent to speak; its interrupt() sends the same with urgency immediate and deferResponse."""
    agent = make_agent(first_speaker="user", latency_ms=100)
    d = Driver(agent)
    d.run_for(0.1)
    asked = d.now
    d.send({"type": "user_text_message", "text": "", "deferResponse": False})
    d.run_for(3.0)
    (reply,) = agent.truth.replies
    assert reply.kind == "reply" and reply.first_byte_ns == asked + 100 * MS
    assert d.states() == ["listening", "thinking", "speaking", "listening"]
    assert [m.payload["role"] for m in d.messages("transcript")][-1] == "agent"
    assert not [m for m in d.messages("transcript") if m.payload["role"] == "user"]  # nothing to echo
    assert [m["role"] for m in agent.record.messages] == ["MESSAGE_ROLE_AGENT"]

    agent = make_agent(latency_ms=100, buffer_ms=30000, greeting="a b c d e f g h")
    d = Driver(agent)
    d.run_for(0.5)  # the greeting plays
    d.send({"type": "user_text_message", "text": "", "urgency": "immediate", "deferResponse": True})
    d.run_for(2.0)
    assert [c.cause for c in agent.truth.clears] == ["user_text_message"]
    assert len(agent.truth.replies) == 1 and not agent.truth.turns  # cut off, no reply
    assert d.states()[-1] == "listening"


def test_an_immediate_text_at_the_instant_the_agent_falls_silent_keeps_the_utterance_whole():
    """Its playback ended but its end had not been handled yet: it was heard whole, so it keeps
    its final transcript, message and place, and the text's reply follows it."""
    agent = make_agent(latency_ms=100, buffer_ms=30000, greeting="a b c d")
    d = Driver(agent)
    d.run_for(0.15)
    end = agent._playback_end_ns(agent.utterance)
    d.now = end  # the client's text arrives before the timer at the playback's end fires
    d.send({"type": "user_text_message", "text": "question", "urgency": "immediate"})
    d.run_for(3.0)
    finals = [m.payload for m in d.messages("transcript") if m.payload.get("final")]
    assert [(m["role"], m["text"]) for m in finals][0] == ("agent", "a b c d")
    assert not agent.truth.clears  # nothing audible was cut
    roles = [m["role"] for m in agent.record.messages]
    assert roles[:3] == ["MESSAGE_ROLE_AGENT", "MESSAGE_ROLE_USER", "MESSAGE_ROLE_AGENT"]


def test_a_reply_queued_behind_speech_starts_with_a_state_change_and_its_own_ordinal():
    """Pipecat ends a response on any state but "speaking": two replies back to back need a
    state change between them, or its client merges them into one."""
    agent = make_agent(latency_ms=100, buffer_ms=30000)  # the greeting plays 100-1000 ms
    d = Driver(agent)
    d.run_for(0.2)
    d.send({"type": "user_text_message", "text": "question", "urgency": "soon"})
    d.run_for(3.0)
    greeting, reply = agent.truth.replies
    assert reply.first_byte_ns == greeting.playback_end_ns  # it was due long before
    assert d.states() == ["listening", "speaking", "thinking", "speaking", "listening"]
    wire = [m.payload for m in d.messages() if m.at == greeting.playback_end_ns]
    sequence = [(m["type"], m.get("state", m.get("final"))) for m in wire]
    assert sequence[:3] == [("transcript", True), ("state", "thinking"), ("state", "speaking")]
    agent_ordinals = {m.payload["ordinal"] for m in d.messages("transcript") if m.payload["role"] == "agent"}
    assert agent_ordinals == {0, 2}  # the user's text is ordinal 1


def text_of(chars: int) -> str:
    """Words of nine letters and a space, cut to exactly `chars` characters."""
    return ("abcdefghi " * (chars // 10 + 1))[:chars]


def test_a_text_too_long_to_speak_sent_by_the_client_is_a_mistake_and_never_synthesized():
    """Speech is synthesized on the event loop every call shares: a forced or goodbye message over
    MAX_SPOKEN_TEXT_CHARS is reported as the client's mistake naming the limit, and neither
    synthesized nor acted on (a 50 KB text blocked the server for seconds). At the limit it is
    spoken."""
    synthesized: list[str] = []

    def counting_synth(text: str, rate: int, wpm: int) -> FakeSpeech:
        synthesized.append(text)
        return fake_synth(text, rate, wpm)

    agent = make_agent(first_speaker="user", synth=counting_synth)
    d = Driver(agent)
    too_long = text_of(MAX_SPOKEN_TEXT_CHARS + 1)
    d.send({"type": "forced_agent_message", "content": too_long, "urgency": "immediate"})
    d.send({"type": "hang_up", "message": too_long})
    d.send({"type": "forced_agent_message", "content": ["not", "a", "string"]})
    d.run_for(0.5)
    assert synthesized == [] and agent.truth.replies == [] and not agent.ended
    over = (
        f"is {MAX_SPOKEN_TEXT_CHARS + 1:,} characters, over this server's limit of "
        f"{MAX_SPOKEN_TEXT_CHARS:,} characters for a text the agent speaks (MAX_SPOKEN_TEXT_CHARS)"
    )
    assert mistakes(agent) == [
        f'forced_agent_message "content" {over}: not acted on; send a shorter text',
        f'hang_up "message" {over}: not acted on; send a shorter text',
        "forced_agent_message needs a string \"content\", got ['not', 'a', 'string']",
    ]

    at_limit = text_of(MAX_SPOKEN_TEXT_CHARS)
    d.send({"type": "hang_up", "message": at_limit})
    assert synthesized == [at_limit] and agent.truth.replies[-1].text == at_limit


def test_client_values_quoted_in_mistakes_are_cut_and_say_how_long_they_were():
    """A mistake names what the client sent, but no more than ECHO_MAX_CHARS of it: a 500 KB
    message type sent 20 times made 10 MB of a call's events."""
    agent = make_agent(first_speaker="user")
    agent.settings.data_messages["debug"] = True
    d = Driver(agent)
    huge = "x" * 500_000
    d.send({"type": huge})
    d.send({"type": "client_tool_result", "invocationId": huge})
    d.send({"type": "client_tool_result", "invocationId": [huge]})
    d.send({"type": "user_text_message", "text": "hi", "urgency": huge})
    d.send({"type": "set_output_medium", "medium": huge})
    d.send({"type": "hang_up", "message": {"goodbye": huge}})
    errors = mistakes(agent)
    assert len(errors) == 6
    quoted = f"{'x' * ECHO_MAX_CHARS!r}... (the first {ECHO_MAX_CHARS} of 500,000 characters)"
    assert errors[0] == f"unknown data message type {quoted}"
    assert errors[1] == f"client_tool_result for unknown invocationId {quoted}"
    assert f"of {len(repr([huge])):,} characters)" in errors[2] and "(a list: the first" in errors[2]
    assert f"urgency {quoted} is not one of" in errors[3]
    assert errors[4].endswith(f"got {quoted}")
    assert "(a dict: the first" in errors[5]
    assert all(len(error) < 4 * ECHO_MAX_CHARS for error in errors)
    debug = [m.payload["message"] for m in d.messages("debug")]
    assert len(debug) == 6 and all(len(text) < 5 * ECHO_MAX_CHARS for text in debug)
    # A short value is quoted whole, as always.
    d.send({"type": "no_such_type"})
    assert mistakes(agent)[-1] == "unknown data message type 'no_such_type'"


def test_a_long_tool_result_is_said_up_to_the_spoken_limit_and_kept_whole():
    """A long result is no mistake (a real agent would sum it up): the reply says it up to
    MAX_SPOKEN_TEXT_CHARS, an event says it was cut, and the call's messages keep all of it."""
    tool = {"temporaryTool": {"modelToolName": "lookupOrder", "description": "x", "client": {}}}
    agent = make_agent(
        first_speaker="user", latency_ms=100, tool_calls=(ToolCall(1, "lookupOrder"),), selectedTools=[tool]
    )
    d = Driver(agent)
    d.say(0.5)
    d.silence(1.0)
    d.run_for(1.2)
    invocation = d.messages("client_tool_invocation")[0].payload
    result = text_of(10 * MAX_SPOKEN_TEXT_CHARS)
    d.send({"type": "client_tool_result", "invocationId": invocation["invocationId"], "result": result})
    d.run_for(0.2)
    reply = agent.truth.replies[-1]
    assert (
        reply.kind == "tool_reply" and reply.text == ("The tool answered: " + result)[:MAX_SPOKEN_TEXT_CHARS]
    )
    (shortened,) = [e for e in agent.record.events if e["type"] == "tool_reply_shortened"]
    assert f"{len(result):,} characters" in shortened["text"] and "MAX_SPOKEN_TEXT_CHARS" in shortened["text"]
    assert agent.record.messages[-1]["text"] == result  # the tool result message, whole
    assert not mistakes(agent)


def test_input_arrivals_stop_at_their_limit_and_the_rest_are_counted():
    """Per-frame read times are bounded per call (MAX_INPUT_ARRIVALS), however small the frames:
    the frames past the limit are taken in as audio and only counted."""
    from array import array

    from uvbench.server.truth import MAX_INPUT_ARRIVALS

    agent = make_agent(first_speaker="user")
    d = Driver(agent)
    kept = 2 * (MAX_INPUT_ARRIVALS - 1)  # as if all but one frame's worth had come already
    agent.truth.input_arrivals = array("q", bytes(8 * kept))
    for _ in range(3):
        d.now += 20 * MS
        agent.on_audio(d.now, b"\x00\x00")
    assert len(agent.truth.input_arrivals) == 2 * MAX_INPUT_ARRIVALS
    assert list(agent.truth.input_arrivals[-2:]) == [T0 + 20 * MS, 1]
    assert agent.truth.input.arrivals_dropped == 2 and agent.truth.input.samples_received == 3


def test_the_first_audible_sample_is_not_cached_past_the_life_of_its_speech():
    """Speech is cached by the synthesizer (tts.CACHE_BYTES); a cache here that held it too would
    keep long replies' audio alive after that cache let them go."""
    import gc
    import weakref

    from uvbench.server.agent import _first_audible

    speech = fake_synth("one two", 16000, 175)
    assert _first_audible(speech) == 1
    gone = weakref.ref(speech)
    del speech
    gc.collect()
    assert gone() is None
