"""The simulated voice agent of one call, as a sans-I/O state machine.

The websocket session feeds it what arrives (`on_audio`, `on_text`, `on_message`) and wakes it
at `next_deadline_ns()` (`tick`), always passing the monotonic time; it answers with outgoing
items taken by `drain()`. It never reads a clock, touches a socket or sleeps, so every behaviour
here (endpointing, output pacing against `clientBufferSizeMs`, barge-in, tools) is testable with a
fake clock, and the same object runs hundreds of calls per core.

Output pacing follows Ultravox's documentation: the agent models the client's playback (it starts at the
first byte and plays at 1x while it has audio) and sends ahead of it up to `clientBufferSizeMs`,
then at real time. What it did is written to the call's ground truth as it happens.
"""

from __future__ import annotations

import json
import math
import random
import uuid
import weakref
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from uvbench.protocol import strict_json
from uvbench.protocol.audio import AUDIBLE_THRESHOLD
from uvbench.protocol.durations import DurationError, format_duration, parse_duration
from uvbench.server.config import MAX_SPOKEN_TEXT_CHARS, ToolCall, spoken_text_excess
from uvbench.server.store import CallRecord
from uvbench.server.truth import LEAD_WRITES_MAX, ClearTruth, ReplyTruth, TurnTruth
from uvbench.server.vad import SpeechLasted, SpeechStarted, TurnDetector, TurnEnded, VadSettings

if TYPE_CHECKING:
    from uvbench.audio.tts import Speech

NS = 1_000_000_000
EARLY_NS = 1_000_000
"""A deadline counts as reached this close before it: some event loops' timers fire up to a
millisecond early (uvloop's timers have millisecond resolution)."""
INPUT_CHECK_NS = NS
INPUT_WARN_MS = 250.0
"""Input audio this far behind or ahead of the wall clock raises a warning call event."""
INPUT_AHEAD_MAX_S = 10.0
"""Input audio may run at most this far ahead of real time (counted from its first frame): a
client streaming faster ends its call (close 1008, its reason naming this limit), rather than the
server holding whatever it sends (512 MiB in two seconds took it to 1.6 GB)."""
CLIENT_ERRORS_REPORTED = 100
"""A call's mistakes reported one by one (a warning event each, and a `debug` message to a client
that asked for those); later ones are only counted (`truth.input.client_errors`): 20,000 junk
frames must not become 20,000 events."""
ECHO_MAX_CHARS = 80
"""Most characters of a client's value a report of its mistake repeats (`shown`): enough to
recognize it, while a 500 KB message type sent 20 times no longer makes 10 MB of a call's events."""
DEFAULT_TOOL_TIMEOUT_S = 2.5
MAX_TOOL_TIMEOUT_S = 40.0
MIN_MEDIA_IDLE_S = 10.0

# Data message type -> its flag in medium.serverWebSocket.dataMessages, and whether it is on by
# default (OpenAPI EnabledDataMessages; as Ultravox documents them). Types not listed are always sent.
MESSAGE_FLAGS: dict[str, tuple[str, bool]] = {
    "pong": ("pong", True),
    "state": ("state", True),
    "transcript": ("transcript", True),
    "client_tool_invocation": ("clientToolInvocation", True),
    "playback_clear_buffer": ("playbackClearBuffer", True),
    "call_started": ("callStarted", True),
    "debug": ("debug", False),
    "call_event": ("callEvent", False),
    "user_started_speaking": ("userStartedSpeaking", False),
    "user_stopped_speaking": ("userStoppedSpeaking", False),
}

Synthesizer = Callable[[str, int, int], "Speech"]


def shown(value: Any) -> str:
    """A client's value as a report of its mistake quotes it: its repr, cut after ECHO_MAX_CHARS
    characters with how long it was."""
    if isinstance(value, str):
        if len(value) <= ECHO_MAX_CHARS:
            return repr(value)
        return f"{value[:ECHO_MAX_CHARS]!r}... (the first {ECHO_MAX_CHARS} of {len(value):,} characters)"
    text = repr(value)
    if len(text) <= ECHO_MAX_CHARS:
        return text
    return (
        f"{text[:ECHO_MAX_CHARS]}... (a {type(value).__name__}: the first {ECHO_MAX_CHARS} of "
        f"{len(text):,} characters)"
    )


@dataclass
class Outgoing:
    kind: str
    """"json" (payload: dict), "raw" (payload: str, sent as is), "audio" (payload: bytes),
    "close" (payload: (code, reason)) or "abort" (drop the connection without a close frame)."""
    payload: Any = None
    on_sent: Callable[[int], None] | None = None
    """Called by the I/O shell with the time the item was actually written: ground truth is when
    a byte left, not when the agent decided to send it."""


@dataclass
class Utterance:
    """Agent speech being delivered, with the server's model of the client's playback."""

    reply: ReplyTruth
    ordinal: int
    medium: str
    words: tuple[str, ...]
    word_starts: tuple[int, ...]
    pcm: bytes = b""
    total: int = 0
    interruptible: bool = True
    then: str | None = None
    """What follows its end: "agent_hangup" or "timeout" end the call."""
    sent: int = 0
    play_pos: float = 0.0
    play_ns: int | None = None
    """When play_pos was last brought up to date; None before the first byte."""
    next_due_ns: int | None = None
    words_emitted: int = 0
    stall_done: int = 0
    start_stream_s: float = 0.0


@dataclass
class PendingReply:
    due_ns: int
    reply: ReplyTruth
    interruptible: bool = True
    then: str | None = None
    tool: ToolCall | None = None
    """When set, the agent invokes this client tool at due time instead of speaking."""
    speech: Speech | None = None  # noqa: F821 (a TYPE_CHECKING import)
    """Synthesized when the reply is planned, so its first byte leaves on time."""


@dataclass
class ToolWait:
    invocation_id: str
    name: str
    deadline_ns: int
    turn_index: int | None


@dataclass
class VoiceSegment:
    """Agent audio as the server's playback model says the client heard it (for the recording)."""

    start_ns: int
    pcm: bytes


@dataclass
class AgentSettings:
    """What the agent needs from the create-call body, read once."""

    input_rate: int
    output_rate: int
    buffer_ms: int
    vad: VadSettings
    data_messages: dict[str, bool]
    output_medium: str
    first_speaker: dict[str, Any]
    max_duration_s: float
    media_idle_s: float | None
    time_exceeded_message: str | None
    tools: dict[str, float]
    """Client tools selected for the call: name -> timeout in seconds."""
    recording: bool

    @classmethod
    def from_record(cls, record: CallRecord, experimental_messages: set[str]) -> AgentSettings:
        req = record.request
        medium = record.medium
        flags = {flag: default for flag, default in MESSAGE_FLAGS.values()}
        flags.update({k: bool(v) for k, v in (medium.get("dataMessages") or {}).items()})
        if "debug" in experimental_messages:
            flags["debug"] = True
        if req.get("firstSpeakerSettings"):
            first = req["firstSpeakerSettings"]
        elif req.get("firstSpeaker") == "FIRST_SPEAKER_USER":
            first = {"user": {}}
        else:
            first = {"agent": {}}
        idle = medium.get("mediaIdleTimeout")
        return cls(
            input_rate=record.input_sample_rate,
            output_rate=record.output_sample_rate,
            buffer_ms=record.client_buffer_ms,
            vad=VadSettings.from_api(req.get("vadSettings")),
            data_messages=flags,
            output_medium="text" if req.get("initialOutputMedium") == "MESSAGE_MEDIUM_TEXT" else "voice",
            first_speaker=first,
            max_duration_s=record.max_duration_s,
            media_idle_s=None if idle is None else max(MIN_MEDIA_IDLE_S, parse_duration(idle)),
            time_exceeded_message=req.get("timeExceededMessage"),
            tools=_client_tools(req.get("selectedTools") or []),
            recording=record.recording_enabled,
        )


def _client_tools(selected: list[dict[str, Any]]) -> dict[str, float]:
    tools: dict[str, float] = {}
    for item in selected:
        temporary = item.get("temporaryTool")
        if temporary is not None:
            if "client" not in temporary:
                continue  # http and data-connection tools are not simulated by the local server
            name = item.get("nameOverride") or temporary.get("modelToolName")
            timeout = temporary.get("timeout")
        else:
            # A durable tool by name: the local server has no tool registry, so it is treated as
            # a client tool of that name.
            name = item.get("nameOverride") or item.get("toolName")
            timeout = None
        if not name:
            continue
        seconds = DEFAULT_TOOL_TIMEOUT_S
        if timeout:
            try:
                seconds = min(MAX_TOOL_TIMEOUT_S, parse_duration(timeout))
            except DurationError:
                pass
        tools[name] = seconds
    return tools


class Agent:
    def __init__(
        self,
        record: CallRecord,
        synthesize: Synthesizer,
        *,
        wall: Callable[[int], Any],
        experimental_messages: set[str] | None = None,
    ) -> None:
        self.record = record
        self.truth = record.truth
        self.behaviour = record.agent
        self.faults = record.faults
        self.settings = AgentSettings.from_record(record, experimental_messages or set())
        self._synthesize = synthesize
        self._wall = wall
        seed = self.behaviour.seed
        if seed is None:
            seed = zlib.crc32(record.call_id.encode())
        self.rng = random.Random(seed)
        s = self.settings
        self.vad = TurnDetector(s.input_rate, s.vad)
        self.chunk_samples = max(1, s.output_rate * self.behaviour.chunk_ms // 1000)
        self.buffer_samples = max(self.chunk_samples, s.output_rate * s.buffer_ms // 1000)
        spare_ns = (self.buffer_samples - self.chunk_samples) * NS // s.output_rate
        self._headroom_ns = EARLY_NS if spare_ns >= 2 * EARLY_NS else 0
        self.out: list[Outgoing] = []
        self.ended = False
        self.end_reason: str | None = None
        self.state: str | None = None
        self.output_medium = s.output_medium
        self._ordinal = 0
        self.utterance: Utterance | None = None
        self.pending: PendingReply | None = None
        self.queued: list[PendingReply] = []
        self.tool_wait: ToolWait | None = None
        self.user_turns = 0
        self._odd_byte = b""
        self._segment_interrupted = False
        self._segment_started_ns: int | None = None
        self._segment_during_agent = False
        self._joined_ns = 0
        self._fallback_due_ns: int | None = None
        self._fallback: dict[str, Any] | None = None
        self._max_duration_due_ns: int | None = None
        self._drop_due_ns: int | None = None
        self._next_input_check_ns: int | None = None
        self._input_warning: str | None = None
        self._reported_odd = False
        self._time_exceeded = False
        self.input_pcm = bytearray() if s.recording else None
        self.voice_segments: list[VoiceSegment] = []

    # ------------------------------------------------------------------------------------------
    # Lifecycle

    def start(self, now: int) -> None:
        """The client joined: greet it and arm the call's timers."""
        self._joined_ns = now
        self.truth.joined_ns = now
        self._send(now, {"type": "call_started", "callId": self.record.call_id})
        self.truth.call_started_sent_ns = now
        self._event(now, "info", "call_joined", "Client joined the call.")
        if self.faults.malformed_messages:
            self.out.append(Outgoing("raw", "{this is not json"))
        if self.faults.unknown_messages:
            self._send(now, {"type": "uvbench_unknown_message", "note": "fault injection"})
        self._set_state(now, "listening")
        self._max_duration_due_ns = now + int(self.settings.max_duration_s * NS)
        if self.faults.drop_socket_after_ms is not None:
            self._drop_due_ns = now + int(self.faults.drop_socket_after_ms * 1e6)
        self._next_input_check_ns = now + INPUT_CHECK_NS
        first = self.settings.first_speaker
        if "agent" in first:
            agent = first["agent"] or {}
            delay = _seconds(agent.get("delay"), 0.0)
            text = agent.get("text") or self.behaviour.greeting
            reply = self._new_reply("greeting", text, None)
            self._plan_reply(
                now, reply, extra_ns=int(delay * NS), interruptible=not agent.get("uninterruptible")
            )
        else:
            fallback = (first.get("user") or {}).get("fallback")
            if fallback:
                self._fallback = fallback
                self._fallback_due_ns = now + int(_seconds(fallback.get("delay"), 0.0) * NS)

    def on_client_closed(self, now: int) -> None:
        if not self.ended:
            self._finish(now, "hangup", close=False)

    def end(self, now: int, reason: str) -> None:
        """End the call from outside (REST DELETE, server shutdown)."""
        if not self.ended:
            self._finish(now, reason, close=True)

    def drain(self) -> list[Outgoing]:
        out, self.out = self.out, []
        return out

    # ------------------------------------------------------------------------------------------
    # Input

    def on_audio(self, now: int, data: bytes) -> None:
        if self.ended:
            return
        inp = self.truth.input
        inp.frames_received += 1
        if not data:
            inp.empty_frames += 1
            return
        if self._odd_byte:
            data = self._odd_byte + data
            self._odd_byte = b""
        if len(data) % 2:
            # s16le split mid-sample by the client: keep the stray byte for the next frame.
            self._odd_byte = data[-1:]
            data = data[:-1]
            if not self._reported_odd:
                self._reported_odd = True
                self._client_error(now, "binary frame of odd length: audio must be s16le (2 bytes a sample)")
        if inp.first_audio_ns is None:
            inp.first_audio_ns = now
        inp.last_audio_ns = now
        samples = np.frombuffer(data, dtype="<i2")
        ahead_s = self._input_ahead_s(now, inp.samples_received + samples.size)
        if ahead_s > INPUT_AHEAD_MAX_S:
            why = (
                f"input audio ran {ahead_s:.1f} s ahead of real time, past this server's limit of "
                f"{INPUT_AHEAD_MAX_S:g} s: stream audio in real time"
            )
            self._client_error(now, why)
            # The close frame carries the reason: a client sees it whatever messages it reads.
            self._finish(now, "connection_error", close=True, code=1008, close_reason=why)
            return
        inp.samples_received += samples.size
        self.truth.add_input_arrival(now, inp.samples_received)
        if self.input_pcm is not None:
            self.input_pcm += data
        self._check_input_clock(now)
        for event in self.vad.feed(samples):
            if isinstance(event, SpeechLasted):
                self._on_speech_lasted(now, event)
            elif isinstance(event, SpeechStarted):
                self._on_speech_started(now, event)
            elif isinstance(event, TurnEnded):
                self._on_turn_ended(now, event)
            if self.ended:
                return

    def on_text(self, now: int, text: str) -> None:
        if self.ended:
            return
        try:
            message = strict_json.loads(text)
        except ValueError as exc:
            self._client_error(now, f"text frame is not JSON ({strict_json.reason(exc)})")
            return
        self.on_message(now, message)

    def on_message(self, now: int, message: Any) -> None:
        """A client data message, from the socket or from REST send_data_message."""
        if self.ended:
            return
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            self._client_error(now, 'data message must be a JSON object with a string "type"')
            return
        kind = message["type"]
        handler = self._handlers.get(kind)
        if handler is None:
            self._client_error(now, f"unknown data message type {shown(kind)}")
            return
        handler(self, now, message)

    # ------------------------------------------------------------------------------------------
    # Time

    def next_deadline_ns(self) -> int | None:
        if self.ended:
            return None
        candidates = [
            self._max_duration_due_ns,
            self._drop_due_ns,
            self._next_input_check_ns,
            self._fallback_due_ns,
            self.pending.due_ns if self.pending else None,
            self.tool_wait.deadline_ns if self.tool_wait else None,
        ]
        if self.settings.media_idle_s is not None:
            last = self.truth.input.last_audio_ns or self._joined_ns
            candidates.append(last + int(self.settings.media_idle_s * NS))
        u = self.utterance
        if u is not None:
            candidates.append(u.next_due_ns)
            candidates.append(self._next_word_ns(u))
            candidates.append(self._playback_end_ns(u))
        return min((c for c in candidates if c is not None), default=None)

    def tick(self, now: int) -> None:
        if self.ended:
            return
        due = now + EARLY_NS
        if self._drop_due_ns is not None and self._drop_due_ns <= due:
            self._drop_due_ns = None
            self._event(now, "warning", "fault_socket_dropped", "Fault injection: socket dropped.")
            self.out.append(Outgoing("abort"))
            self._finish(now, "connection_error", close=False)
            return
        if self._max_duration_due_ns is not None and self._max_duration_due_ns <= due:
            self._max_duration_due_ns = None
            self._on_max_duration(now)
        if self.settings.media_idle_s is not None:
            last = self.truth.input.last_audio_ns or self._joined_ns
            if last + int(self.settings.media_idle_s * NS) <= due:
                self._event(now, "error", "media_idle_timeout", "No audio received within mediaIdleTimeout.")
                self._finish(now, "connection_error", close=True)
                return
        if self._next_input_check_ns is not None and self._next_input_check_ns <= due:
            self._next_input_check_ns = now + INPUT_CHECK_NS
            self._check_input_clock(now)
        if self._fallback_due_ns is not None and self._fallback_due_ns <= due:
            self._fallback_due_ns = None
            fallback = self._fallback or {}
            reply = self._new_reply("fallback", fallback.get("text") or self.behaviour.greeting, None)
            self._plan_reply(now, reply)
        if self.tool_wait is not None and self.tool_wait.deadline_ns <= due:
            self._on_tool_timeout(now)
        if self.pending is not None and self.pending.due_ns <= due:
            self._on_pending_due(now)
        if self.utterance is not None:
            self._pump_utterance(now)

    # ------------------------------------------------------------------------------------------
    # Turns

    def _on_speech_started(self, now: int, event: SpeechStarted) -> None:
        self._segment_interrupted = False
        self._segment_started_ns = now
        self._segment_during_agent = self._agent_audible(now) or self.pending is not None
        self._fallback_due_ns = None
        self._send(now, {"type": "user_started_speaking"})

    def _on_speech_lasted(self, now: int, event: SpeechLasted) -> None:
        if self._segment_interrupted or event.speech_s + 1e-9 < self.settings.vad.interruption_s:
            return
        u = self.utterance
        if u is not None and u.interruptible and self._agent_audible(now):
            self._segment_interrupted = True
            self._interrupt(now, "barge_in", speech_start_sample=event.start_sample)
        elif self.pending is not None and self.pending.interruptible and self.tool_wait is None:
            # "thinking" can be interrupted too: the reply is dropped before its first byte.
            self._segment_interrupted = True
            self.pending.reply.cancelled = True
            self._event(now, "info", "reply_cancelled", "User spoke before the agent's reply started.")
            self.pending = None
            self._set_state(now, "listening")

    def _on_turn_ended(self, now: int, event: TurnEnded) -> None:
        self._send(now, {"type": "user_stopped_speaking"})
        if not event.is_turn:
            self._event(
                now,
                "debug",
                "speech_ignored",
                f"{event.speech_s:.3f} s of speech is below minimumTurnDuration.",
            )
            return
        if self._segment_during_agent and not self._segment_interrupted:
            # Speech over the agent that did not interrupt it (a backchannel) is not a turn.
            return
        if self.tool_wait is not None:
            return  # the conversation is frozen while a client tool runs
        rate = self.settings.input_rate
        self.user_turns += 1
        turn = TurnTruth(
            index=len(self.truth.turns),
            kind="voice",
            speech_start_sample=event.start_sample,
            speech_end_sample=event.end_sample,
            speech_start_detected_ns=self._segment_started_ns,
            end_decided_ns=now,
        )
        self.truth.turns.append(turn)
        speech_s = (event.end_sample - event.start_sample) / rate
        text = f"[{speech_s:.2f} s of speech]"
        self._user_said(
            now,
            text,
            "voice",
            stream=(event.start_sample / rate, event.end_sample / rate),
            wall=(self._segment_started_ns or now, now),
        )
        self._event(now, "debug", "user_turn_ended", f"User turn {turn.index} ended ({speech_s:.3f} s).")
        self._respond_to_turn(now, turn)

    def _respond_to_turn(self, now: int, turn: TurnTruth) -> None:
        def written(t_ns: int) -> None:
            turn.thinking_sent_ns = t_ns

        self._set_state(now, "thinking", on_sent=written)
        tool = next((t for t in self.behaviour.tool_calls if t.turn == self.user_turns), None)
        if tool is not None and tool.name in self.settings.tools:
            reply = self._new_reply("tool_call", "", turn.index)
            turn.reply_index = reply.index
            self._plan_reply(now, reply, tool=tool)
            return
        if tool is not None:
            self._event(
                now,
                "warning",
                "tool_not_selected",
                f"Tool {tool.name!r} is not a client tool of this call.",
            )
        replies = self.behaviour.replies
        text = replies[(self.user_turns - 1) % len(replies)]
        reply = self._new_reply("reply", text, turn.index)
        turn.reply_index = reply.index
        self._plan_reply(now, reply)

    # ------------------------------------------------------------------------------------------
    # Replies

    def _new_reply(self, kind: str, text: str, turn_index: int | None) -> ReplyTruth:
        reply = ReplyTruth(
            index=len(self.truth.replies),
            kind=kind,
            text=text,
            medium=self.output_medium,
            turn_index=turn_index,
        )
        self.truth.replies.append(reply)
        return reply

    def _plan_reply(
        self,
        now: int,
        reply: ReplyTruth,
        *,
        extra_ns: int = 0,
        interruptible: bool = True,
        then: str | None = None,
        tool: ToolCall | None = None,
        immediate: bool = False,
    ) -> None:
        latency_ms = (
            0.0 if immediate else self.behaviour.latency.draw(self.rng) + self.faults.extra_latency_ms
        )
        reply.decided_ns = now
        reply.latency_ms = latency_ms
        pending = PendingReply(now + extra_ns + int(latency_ms * 1e6), reply, interruptible, then, tool)
        if tool is None and reply.text and self.output_medium == "voice":
            pending.speech = self._synthesize(reply.text, self.settings.output_rate, self.behaviour.voice_wpm)
        if self.pending is not None or self.utterance is not None or self.tool_wait is not None:
            self.queued.append(pending)
        else:
            self.pending = pending

    def _on_pending_due(self, now: int) -> None:
        pending, self.pending = self.pending, None
        assert pending is not None
        if pending.tool is not None:
            self._invoke_tool(now, pending)
            return
        self._start_utterance(now, pending)

    def _start_utterance(self, now: int, pending: PendingReply) -> None:
        reply = pending.reply
        reply.medium = self.output_medium
        ordinal = self._next_ordinal()
        words = tuple(reply.text.split())
        if self.output_medium == "text" or not reply.text:
            # Text output: the whole reply at once, no audio.
            self._set_state(now, "speaking")
            reply.first_byte_ns = reply.last_byte_ns = reply.playback_end_ns = now
            if reply.text:
                self._transcript(now, "agent", "text", ordinal, delta=reply.text, final=False)
            self._transcript(now, "agent", "text", ordinal, text=reply.text, final=True)
            self._add_message(
                "MESSAGE_ROLE_AGENT",
                reply.text,
                "MESSAGE_MEDIUM_TEXT",
                stream=(self._stream_s(), self._stream_s()),
                wall=(now, now),
            )
            self._after_utterance(now, pending.then)
            return
        speech = pending.speech or self._synthesize(
            reply.text, self.settings.output_rate, self.behaviour.voice_wpm
        )
        pcm = speech.pcm.astype("<i2", copy=False).tobytes()
        u = Utterance(
            reply=reply,
            ordinal=ordinal,
            medium="voice",
            words=speech.words or words,
            word_starts=speech.word_starts or tuple(0 for _ in words),
            pcm=pcm,
            total=len(pcm) // 2,
            interruptible=pending.interruptible,
            then=pending.then,
            next_due_ns=now,
            start_stream_s=self._stream_s(),
        )
        reply.total_samples = u.total
        reply.frame_samples = self.chunk_samples
        reply.first_audible_sample = _first_audible(speech)
        self.utterance = u
        self._pump_utterance(now)

    def _pump_utterance(self, now: int) -> None:
        u = self.utterance
        assert u is not None
        due_limit = now + EARLY_NS
        while u.next_due_ns is not None and u.next_due_ns <= due_limit:
            self._advance_play(u, now)
            first = u.play_ns is None
            if first:
                u.play_ns = now
                u.reply.first_byte_ns = now
                self._set_state(now, "speaking")
            n = min(self.chunk_samples, u.total - u.sent)
            chunk = u.pcm[u.sent * 2 : (u.sent + n) * 2]
            audible = u.reply.first_audible_sample
            lead = audible is not None and u.sent <= audible
            written = self._chunk_written(u.reply, u.next_due_ns, first, lead)
            self.out.append(Outgoing("audio", chunk, written))
            u.sent += n
            u.reply.sent_samples = u.sent
            u.reply.last_byte_ns = now
            u.next_due_ns = self._next_due(u, now)
        self._advance_play(u, now)
        self._emit_words(u, now)
        end_ns = self._playback_end_ns(u)
        if end_ns is not None and end_ns <= due_limit:
            self._finish_utterance(now, interrupted=False)

    def _chunk_written(
        self, reply: ReplyTruth, due_ns: int, first: bool, lead: bool
    ) -> Callable[[int], None]:
        def written(t_ns: int) -> None:
            self.truth.pacing_lateness_ms.append((t_ns - due_ns) / 1e6)
            if first:
                reply.first_byte_ns = t_ns
            if lead and len(reply.lead_writes_ns) < LEAD_WRITES_MAX:
                reply.lead_writes_ns.append(t_ns)
            reply.last_byte_ns = t_ns

        return written

    def _next_due(self, u: Utterance, now: int) -> int | None:
        if u.sent >= u.total:
            return None
        rate = self.settings.output_rate
        buffered = u.sent - u.play_pos
        excess = buffered + self.chunk_samples - self.buffer_samples
        # When the buffer limits the pace, aim EARLY_NS after the moment it has room, so a timer
        # that fires up to that much early (uvloop's are millisecond timers) still never overfills
        # the client; unless the buffer holds no more than the chunk, where waiting would starve
        # the client instead. Rounded up for the same reason.
        due = now if excess <= 0 else now + math.ceil(excess * NS / rate) + self._headroom_ns
        stalls = self.faults.output_stalls
        while u.stall_done < len(stalls) and u.sent >= stalls[u.stall_done].after_ms * rate / 1000:
            due = max(due, now + int(stalls[u.stall_done].duration_ms * 1e6))
            u.stall_done += 1
        if self.faults.output_jitter_ms > 0:
            due += int(self.rng.uniform(0, self.faults.output_jitter_ms) * 1e6)
        return due

    def _advance_play(self, u: Utterance, now: int) -> None:
        if u.play_ns is None or now <= u.play_ns:
            return
        u.play_pos = min(float(u.sent), u.play_pos + (now - u.play_ns) * self.settings.output_rate / NS)
        u.play_ns = now

    def _time_of_position(self, u: Utterance, position: float) -> int | None:
        """When the modelled playback reaches `position`, if the audio up to it has been sent."""
        if u.play_ns is None or position > u.sent:
            return None
        if position <= u.play_pos:
            return u.play_ns
        return u.play_ns + int((position - u.play_pos) / self.settings.output_rate * NS)

    def _next_word_ns(self, u: Utterance) -> int | None:
        if u.words_emitted >= len(u.words):
            return None
        return self._time_of_position(u, u.word_starts[u.words_emitted])

    def _playback_end_ns(self, u: Utterance) -> int | None:
        if u.sent < u.total:
            return None
        return self._time_of_position(u, u.total)

    def _emit_words(self, u: Utterance, now: int) -> None:
        # Agent transcript deltas follow the playback the client hears, word by word.
        while u.words_emitted < len(u.words):
            at = self._time_of_position(u, u.word_starts[u.words_emitted])
            if at is None or at > now + EARLY_NS:
                break
            word = u.words[u.words_emitted]
            delta = word if u.words_emitted == 0 else " " + word
            u.words_emitted += 1
            self._transcript(now, "agent", "voice", u.ordinal, delta=delta, final=False)

    def _finish_utterance(self, now: int, *, interrupted: bool, follow_on: bool = True) -> None:
        """The utterance ends: its final transcript, message and recording. `follow_on` False: what
        would come after it (the next queued reply, the state) is the caller's, which replaces it."""
        u = self.utterance
        assert u is not None
        self.utterance = None
        self._advance_play(u, now)
        played = int(u.play_pos)
        reply = u.reply
        reply.played_samples = played
        reply.playback_end_ns = now
        if interrupted:
            heard = sum(1 for start in u.word_starts if start < played)
            text = " ".join(u.words[:heard])
        else:
            text = reply.text
        if self.settings.recording and u.play_ns is not None:
            self.voice_segments.append(VoiceSegment(reply.first_byte_ns or now, u.pcm[: played * 2]))
        # The final (truncated) transcript goes before "listening": LiveKit ends its generation on
        # either, and an agent transcript after "listening" would open a new, empty one.
        self._transcript(now, "agent", "voice", u.ordinal, text=text, final=True)
        if interrupted:
            self._set_state(now, "listening")
        self._add_message(
            "MESSAGE_ROLE_AGENT",
            text,
            "MESSAGE_MEDIUM_VOICE",
            stream=(u.start_stream_s, self._stream_s()),
            wall=(reply.first_byte_ns or now, now),
        )
        if not interrupted and follow_on:
            self._after_utterance(now, u.then)

    def _after_utterance(self, now: int, then: str | None) -> None:
        if then is not None:
            self._finish(now, then, close=True)
            return
        if self.queued:
            nxt = self.queued.pop(0)
            # Its latency counts from now: the agent could not speak while it was talking.
            if nxt.tool is None and nxt.due_ns < now:
                nxt.due_ns = now
            self.pending = nxt
            # A state change between two replies even when the next is due at once: Pipecat ends
            # a response on any state but "speaking" and would merge two back to back replies.
            self._set_state(now, "thinking")
            if nxt.due_ns <= now:
                self._on_pending_due(now)
            return
        self._set_state(now, "listening")

    def _agent_audible(self, now: int) -> bool:
        u = self.utterance
        if u is None or u.play_ns is None:
            return False
        end = self._playback_end_ns(u)
        return end is None or end > now

    def _interrupt(self, now: int, cause: str, *, speech_start_sample: int | None = None) -> None:
        """Stop the agent mid-utterance: clear the client's buffer, listen, finalize the text."""
        u = self.utterance
        if u is None:
            return
        reply = u.reply
        reply.interrupted = True
        reply.clear_sent_ns = now
        clear = ClearTruth(
            sent_ns=now,
            reply_index=reply.index,
            cause=cause,
            speech_start_sample=speech_start_sample,
            speech_start_detected_ns=self._segment_started_ns if cause == "barge_in" else None,
        )
        self.truth.clears.append(clear)
        self.queued.clear()

        def written(t_ns: int) -> None:
            clear.sent_ns = reply.clear_sent_ns = t_ns

        self._send(now, {"type": "playback_clear_buffer"}, on_sent=written)
        self._event(now, "info", "agent_interrupted", f"Agent interrupted ({cause}).")
        self._finish_utterance(now, interrupted=True)

    # ------------------------------------------------------------------------------------------
    # Tools

    def _invoke_tool(self, now: int, pending: PendingReply) -> None:
        tool = pending.tool
        assert tool is not None
        invocation_id = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        self._send(
            now,
            {
                "type": "client_tool_invocation",
                "toolName": tool.name,
                "invocationId": invocation_id,
                "parameters": tool.parameters,
            },
        )
        self._add_message(
            "MESSAGE_ROLE_TOOL_CALL",
            json.dumps(tool.parameters),
            "MESSAGE_MEDIUM_VOICE",
            stream=(self._stream_s(), self._stream_s()),
            wall=(now, now),
            invocation_id=invocation_id,
            tool_name=tool.name,
        )
        pending.reply.first_byte_ns = now
        timeout = self.settings.tools.get(tool.name, DEFAULT_TOOL_TIMEOUT_S)
        self.tool_wait = ToolWait(invocation_id, tool.name, now + int(timeout * NS), pending.reply.turn_index)

    def _on_tool_result(self, now: int, message: dict[str, Any]) -> None:
        wait = self.tool_wait
        invocation_id = message.get("invocationId")
        if wait is None or invocation_id != wait.invocation_id:
            self._client_error(now, f"{message['type']} for unknown invocationId {shown(invocation_id)}")
            return
        self.tool_wait = None
        result = message.get("result")
        error_type = message.get("errorType")
        self._add_message(
            "MESSAGE_ROLE_TOOL_RESULT",
            result if isinstance(result, str) else json.dumps(result),
            "MESSAGE_MEDIUM_VOICE",
            stream=(self._stream_s(), self._stream_s()),
            wall=(now, now),
            invocation_id=wait.invocation_id,
            tool_name=wait.name,
            error=message.get("errorMessage") if error_type else None,
        )
        if message.get("responseType") == "hang-up":
            self._finish(now, "agent_hangup", close=True)
            return
        if message.get("agentReaction") == "listens":
            self._after_utterance(now, None)
            return
        if error_type:
            text = "Sorry, I could not complete that."
        else:
            text = self._tool_reply(now, result if isinstance(result, str) else json.dumps(result))
        self._set_state(now, "thinking")
        self._plan_reply(now, self._new_reply("tool_reply", text, wait.turn_index))

    def _tool_reply(self, now: int, result: str) -> str:
        """What the agent says of a tool's result: `tool_reply` with the result in it, cut to
        MAX_SPOKEN_TEXT_CHARS. A long result is no mistake of the client's (a real agent would sum
        it up), so it is said in part, and the call's events say so."""
        text = self.behaviour.tool_reply.format(result=result[:MAX_SPOKEN_TEXT_CHARS])
        if len(text) <= MAX_SPOKEN_TEXT_CHARS and len(result) <= MAX_SPOKEN_TEXT_CHARS:
            return text
        self._event(
            now,
            "info",
            "tool_reply_shortened",
            f"The reply to a tool result of {len(result):,} characters is said up to this server's "
            f"limit of {MAX_SPOKEN_TEXT_CHARS:,} characters for a text the agent speaks "
            "(MAX_SPOKEN_TEXT_CHARS).",
        )
        return text[:MAX_SPOKEN_TEXT_CHARS]

    def _on_tool_timeout(self, now: int) -> None:
        wait = self.tool_wait
        assert wait is not None
        self.tool_wait = None
        self._event(now, "warning", "tool_timeout", f"Client tool {wait.name!r} did not answer in time.")
        self._plan_reply(now, self._new_reply("tool_reply", "Sorry, that took too long.", wait.turn_index))

    # ------------------------------------------------------------------------------------------
    # Client data messages

    def _on_ping(self, now: int, message: dict[str, Any]) -> None:
        self._send(now, {"type": "pong", "timestamp": message.get("timestamp")})

    def _on_user_text(self, now: int, message: dict[str, Any]) -> None:
        text = message.get("text")
        if not isinstance(text, str):
            self._client_error(now, f'{message["type"]} needs a string "text"')
            return
        urgency = message.get("urgency") or "soon"
        if urgency not in ("immediate", "soon", "later"):
            self._client_error(now, f"urgency {shown(urgency)} is not one of immediate, soon, later")
            return
        # deferResponse: the text is taken in without a reply. With "immediate" it still cuts the
        # agent off: LiveKit's interrupt() is {"text": "", "urgency": "immediate", "deferResponse": true}.
        wants_reply = urgency != "later" and not message.get("deferResponse")
        if urgency == "immediate" and self.utterance is not None and not self._agent_audible(now):
            # Heard to its end this very instant (its end not handled yet): it ends whole, first.
            self._finish_utterance(now, interrupted=False, follow_on=False)
        if text:
            self._user_said(now, text, "text", stream=(self._stream_s(), self._stream_s()), wall=(now, now))
        if urgency == "immediate":
            if self.utterance is not None:
                self._interrupt(now, "user_text_message")
            self.pending = None
            self.queued.clear()
        if not wants_reply or self.tool_wait is not None:
            return
        # Empty text that wants a reply (LiveKit's generate_reply() without instructions) asks the
        # agent to take its turn: a text turn with nothing to echo.
        self.user_turns += 1
        turn = TurnTruth(index=len(self.truth.turns), kind="text", end_decided_ns=now)
        self.truth.turns.append(turn)
        if self.utterance is None and self.pending is None:
            self._respond_to_turn(now, turn)
        else:
            replies = self.behaviour.replies
            reply = self._new_reply("reply", replies[(self.user_turns - 1) % len(replies)], turn.index)
            turn.reply_index = reply.index
            self._plan_reply(now, reply)

    def _on_set_output_medium(self, now: int, message: dict[str, Any]) -> None:
        medium = message.get("medium")
        if medium not in ("voice", "text"):
            self._client_error(now, f'set_output_medium needs medium "voice" or "text", got {shown(medium)}')
            return
        # Takes effect from the next agent utterance.
        self.output_medium = medium

    def _on_forced_agent_message(self, now: int, message: dict[str, Any]) -> None:
        content = self._spoken_field(now, message, "content")
        if content is None:
            return
        urgency = message.get("urgency") or "soon"
        if urgency == "immediate":
            if self.utterance is not None and self._agent_audible(now):
                self._interrupt(now, "forced_agent_message")
            self.pending = None
            self.queued.clear()
        reply = self._new_reply("forced", content, None)
        self._plan_reply(now, reply, interruptible=not message.get("uninterruptible"), immediate=True)
        if self.pending is not None and self.pending.reply is reply:
            self._on_pending_due(now)

    def _on_hang_up(self, now: int, message: dict[str, Any]) -> None:
        text = self._spoken_field(now, message, "message")
        if text is None:
            return
        if not text:
            self._finish(now, "agent_hangup", close=True)
            return
        if self.utterance is not None and self._agent_audible(now):
            self._interrupt(now, "hang_up")
        self.pending = None
        self.queued.clear()
        reply = self._new_reply("goodbye", text, None)
        self._plan_reply(now, reply, interruptible=False, then="agent_hangup", immediate=True)
        self._on_pending_due(now)

    def _spoken_field(self, now: int, message: dict[str, Any], name: str) -> str | None:
        """The text a data message asks the agent to say ("" when absent); None, the mistake
        reported, when it is no string or too long to speak: the message is then not acted on."""
        text = message.get(name)
        if text is None:
            return ""
        if not isinstance(text, str):
            self._client_error(now, f'{message["type"]} needs a string "{name}", got {shown(text)}')
            return None
        excess = spoken_text_excess(text)
        if excess is not None:
            self._client_error(
                now, f'{message["type"]} "{name}" is {excess}: not acted on; send a shorter text'
            )
            return None
        return text

    _handlers: dict[str, Callable[[Agent, int, dict[str, Any]], None]] = {
        "ping": _on_ping,
        "user_text_message": _on_user_text,
        "input_text_message": _on_user_text,
        "set_output_medium": _on_set_output_medium,
        "client_tool_result": _on_tool_result,
        "data_connection_tool_result": _on_tool_result,
        "forced_agent_message": _on_forced_agent_message,
        "hang_up": _on_hang_up,
    }

    # ------------------------------------------------------------------------------------------
    # Ending

    def _on_max_duration(self, now: int) -> None:
        self._event(now, "info", "max_duration", "maxDuration reached.")
        text = self.settings.time_exceeded_message
        if not text:
            self._finish(now, "timeout", close=True)
            return
        if self.utterance is not None and self._agent_audible(now):
            self._interrupt(now, "max_duration")
        elif self.utterance is not None:
            self._finish_utterance(now, interrupted=False, follow_on=False)
        self.pending = None
        self.queued.clear()
        self.tool_wait = None
        reply = self._new_reply("time_exceeded", text, None)
        self._plan_reply(now, reply, interruptible=False, then="timeout", immediate=True)
        self._on_pending_due(now)

    def _finish(
        self, now: int, reason: str, *, close: bool, code: int = 1000, close_reason: str | None = None
    ) -> None:
        if self.ended:
            return
        u = self.utterance
        if u is not None:
            self._advance_play(u, now)
            u.reply.played_samples = int(u.play_pos)
            if self.settings.recording and u.play_ns is not None:
                self.voice_segments.append(
                    VoiceSegment(u.reply.first_byte_ns or now, u.pcm[: int(u.play_pos) * 2])
                )
            self.utterance = None
        self.pending = None
        self.queued.clear()
        self.ended = True
        self.end_reason = reason
        self._event(now, "info", "call_ended", f"Call ended: {reason}.")
        if close:
            self.out.append(Outgoing("close", (code, close_reason or f"call ended: {reason}")))

    # ------------------------------------------------------------------------------------------
    # Helpers

    def _send(self, now: int, message: dict[str, Any], on_sent: Callable[[int], None] | None = None) -> None:
        flag = MESSAGE_FLAGS.get(message["type"])
        if flag is not None and not self.settings.data_messages.get(flag[0], flag[1]):
            return
        self.out.append(Outgoing("json", message, on_sent))

    def _user_said(
        self, now: int, text: str, medium: str, *, stream: tuple[float, float], wall: tuple[int, int]
    ) -> None:
        """A user utterance: its final transcript to the client and its message in the call."""
        self._transcript(now, "user", medium, self._next_ordinal(), text=text, final=True)
        self._add_message(
            "MESSAGE_ROLE_USER", text, f"MESSAGE_MEDIUM_{medium.upper()}", stream=stream, wall=wall
        )

    def _transcript(
        self,
        now: int,
        role: str,
        medium: str,
        ordinal: int,
        *,
        text: str | None = None,
        delta: str | None = None,
        final: bool,
    ) -> None:
        """A transcript message: exactly one of `text` (the whole so far) and `delta` (what's new)."""
        message: dict[str, Any] = {"type": "transcript", "role": role, "medium": medium}
        if delta is not None:
            message["delta"] = delta
        else:
            message["text"] = text
        message["final"] = final
        message["ordinal"] = ordinal
        self._send(now, message)

    def _set_state(self, now: int, state: str, on_sent: Callable[[int], None] | None = None) -> None:
        if state != self.state:
            self.state = state
            self._send(now, {"type": "state", "state": state}, on_sent=on_sent)

    def _next_ordinal(self) -> int:
        ordinal = self._ordinal
        self._ordinal += 1
        return ordinal

    def _stream_s(self) -> float:
        return self.truth.input.samples_received / self.settings.input_rate

    def _client_error(self, now: int, text: str) -> None:
        """A client's mistake, reported where the protocol has room for it: a warning call event
        (`GET .../events`, or a `call_event` message when enabled) and a `debug` message when the
        client asked for debug messages. Never a message type of its own: the documented clients
        log unknown types as errors (LiveKit) or debug noise (Pipecat)."""
        inp = self.truth.input
        inp.client_errors += 1
        if inp.client_errors > CLIENT_ERRORS_REPORTED:
            return
        if inp.client_errors == CLIENT_ERRORS_REPORTED:
            text += f" (this call's {CLIENT_ERRORS_REPORTED}th mistake: later ones are counted, not reported)"
        self._event(now, "warning", "client_message_error", text)
        self._send(now, {"type": "debug", "message": f"client_message_error: {text}"})

    def _event(self, now: int, severity: str, type_: str, text: str) -> None:
        self.record.add_event(now, self._wall(now), severity, type_, text)
        if severity == "debug":
            self._send(now, {"type": "debug", "message": f"{type_}: {text}"})
        else:
            self._send(now, {"type": "call_event", "severity": severity, "eventType": type_, "text": text})

    def _input_ahead_s(self, now: int, samples: int) -> float:
        """How far `samples` of input audio run ahead of the wall clock since the first frame
        (negative: behind)."""
        first = self.truth.input.first_audio_ns
        assert first is not None
        return samples / self.settings.input_rate - (now - first) / NS

    def _check_input_clock(self, now: int) -> None:
        inp = self.truth.input
        if inp.first_audio_ns is None:
            return
        gap_ms = -self._input_ahead_s(now, inp.samples_received) * 1000
        if gap_ms > 0:
            inp.max_deficit_ms = max(inp.max_deficit_ms, gap_ms)
        else:
            inp.max_surplus_ms = max(inp.max_surplus_ms, -gap_ms)
        # One warning each time the input drifts past the limit; re-armed once it recovers.
        if gap_ms > INPUT_WARN_MS and self._input_warning != "underflow":
            self._input_warning = "underflow"
            self.record.add_event(
                now,
                self._wall(now),
                "warning",
                "audio_underflow",
                f"Input audio is {gap_ms:.0f} ms behind real time.",
                {"deficitMs": round(gap_ms, 1)},
            )
        elif -gap_ms > INPUT_WARN_MS and self._input_warning != "overflow":
            self._input_warning = "overflow"
            self.record.add_event(
                now,
                self._wall(now),
                "warning",
                "audio_overflow",
                f"Input audio is {-gap_ms:.0f} ms ahead of real time.",
                {"surplusMs": round(-gap_ms, 1)},
            )
        elif abs(gap_ms) < INPUT_WARN_MS / 2:
            self._input_warning = None

    def _add_message(
        self,
        role: str,
        text: str,
        medium: str,
        *,
        stream: tuple[float, float],
        wall: tuple[int, int],
        invocation_id: str | None = None,
        tool_name: str | None = None,
        error: str | None = None,
    ) -> None:
        joined = self._joined_ns
        message: dict[str, Any] = {
            "role": role,
            "text": text,
            "medium": medium,
            "callStageMessageIndex": len(self.record.messages),
            "callStageId": self.record.call_stage_id,
            "timespan": {
                "start": format_duration(round(stream[0], 3)),
                "end": format_duration(round(stream[1], 3)),
            },
            "wallClockTimespan": {
                "start": format_duration(round(max(0, wall[0] - joined) / NS, 3)),
                "end": format_duration(round(max(0, wall[1] - joined) / NS, 3)),
            },
        }
        if invocation_id is not None:
            message["invocationId"] = invocation_id
        if tool_name is not None:
            message["toolName"] = tool_name
        if error is not None:
            message["errorDetails"] = error
        self.record.messages.append(message)


_first_audible_of: weakref.WeakKeyDictionary[Speech, int | None] = weakref.WeakKeyDictionary()


def _first_audible(speech: Speech) -> int | None:
    """Where the speech's sound starts; kept while the (shared, cached) Speech lives, and no
    longer: a cache that held the speech would keep its audio past the synthesizer's own cache."""
    if speech in _first_audible_of:
        return _first_audible_of[speech]
    loud = np.flatnonzero(np.abs(speech.pcm.astype(np.int32)) > AUDIBLE_THRESHOLD)
    first = int(loud[0]) if loud.size else None
    _first_audible_of[speech] = first
    return first


def _seconds(value: Any, default: float) -> float:
    if value is None:
        return default
    try:
        return parse_duration(value)
    except DurationError:
        return default
