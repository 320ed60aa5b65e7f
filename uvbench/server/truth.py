"""The server's own record of what it did in a call, on the host's monotonic clock (ns).

This is the ground truth uvbench's client-side figures are held against (docs/metrics.md, "Ground
truth"). It is written by the server's agent only, never computed from the client's code, so a
test of one against the other proves something. Stream positions are in input samples (user
audio) or output samples (agent audio) as the server counted them.
"""

from __future__ import annotations

from array import array
from dataclasses import asdict, dataclass, field
from typing import Any

NS = 1_000_000_000


@dataclass
class TurnTruth:
    """A user turn as the server's endpointing saw it."""

    index: int
    kind: str
    """"voice" (endpointed from audio) or "text" (a user_text_message)."""
    speech_start_sample: int | None = None
    speech_end_sample: int | None = None
    speech_start_detected_ns: int | None = None
    end_decided_ns: int | None = None
    """When the server decided the user's turn ended."""
    thinking_sent_ns: int | None = None
    """When it wrote the `state: thinking` that tells the client so (after the turn's transcript)."""
    reply_index: int | None = None


LEAD_WRITES_MAX = 1000
"""Frames whose writes a reply keeps in `lead_writes_ns` (20 s of 20 ms frames before the first
audible sample; a reply with more silence before its speech keeps the first ones only)."""


@dataclass
class ReplyTruth:
    """One agent utterance: greeting, reply, tool reply, forced message, goodbye."""

    index: int
    kind: str
    text: str
    medium: str
    turn_index: int | None = None
    decided_ns: int | None = None
    latency_ms: float | None = None
    """The response latency drawn for it (with any fault added)."""
    total_samples: int = 0
    first_audible_sample: int | None = None
    """The first non-silent sample of the reply's audio (protocol.audio.AUDIBLE_THRESHOLD)."""
    first_byte_ns: int | None = None
    frame_samples: int = 0
    """Samples in each of its audio frames (the last may hold fewer)."""
    lead_writes_ns: list[int] = field(default_factory=list)
    """When each audio frame up to the one holding `first_audible_sample` was written (at most
    LEAD_WRITES_MAX): when the client hears that sample follows from them (`heard_ns`), even
    when the server's own pacer wrote a frame late."""
    last_byte_ns: int | None = None
    sent_samples: int = 0
    played_samples: int = 0
    """Samples the server's playback model says the client had played when it ended."""
    playback_end_ns: int | None = None
    interrupted: bool = False
    clear_sent_ns: int | None = None
    cancelled: bool = False
    """Interrupted before its first byte (while thinking)."""


def heard_ns(writes_ns: list[int], frame_samples: int, sample: int, rate: int) -> int | None:
    """When a listener starts hearing `sample` of an utterance whose frames (`frame_samples` each)
    were written at `writes_ns`, if it plays each frame as it comes, back to back at `rate`: a
    frame that comes after the audio before it has played out starts a new run at its arrival
    (sample k of a run starts k / rate after the run's start, rounded down to the ns). None when
    the frame holding `sample` is not among the writes. Written here from that rule alone, not
    with the client's listener, so the two can be held against each other."""
    if frame_samples <= 0 or sample < 0:
        return None
    last = sample // frame_samples
    if last >= len(writes_ns):
        return None
    run_start_ns, run_first = writes_ns[0], 0
    for i in range(1, last + 1):
        played_out_ns = run_start_ns + (i * frame_samples - run_first) * NS // rate
        if writes_ns[i] > played_out_ns:
            run_start_ns, run_first = writes_ns[i], i * frame_samples
    return run_start_ns + (sample - run_first) * NS // rate


@dataclass
class ClearTruth:
    sent_ns: int
    reply_index: int
    cause: str
    """"barge_in", "user_text_message" or "forced_agent_message"."""
    speech_start_sample: int | None = None
    """For a barge-in: stream position of the first speech sample of the interrupting speech."""
    speech_start_detected_ns: int | None = None


@dataclass
class InputTruth:
    first_audio_ns: int | None = None
    last_audio_ns: int | None = None
    samples_received: int = 0
    frames_received: int = 0
    empty_frames: int = 0
    max_deficit_ms: float = 0.0
    """Most the client's audio fell behind the wall clock (underflow)."""
    max_surplus_ms: float = 0.0
    """Most the client's audio ran ahead of the wall clock (overflow)."""
    client_errors: int = 0
    """The client's mistakes (malformed frames and messages), the unanswered ones included."""
    arrivals_dropped: int = 0
    """Input frames past MAX_INPUT_ARRIVALS, whose read times `arrivals` (`?input=1`) lacks."""


MAX_INPUT_ARRIVALS = 200_000
"""Input frames whose read time a call keeps (`GroundTruth.input_arrivals`): a call of the default
maxDuration (3,600 s) in 20 ms frames has 180,000. At 16 bytes a frame a call keeps at most 3.2 MB
of them, however small its frames: 2-byte frames at real time would add 128 KB a second."""


@dataclass
class GroundTruth:
    joined_ns: int | None = None
    call_started_sent_ns: int | None = None
    input: InputTruth = field(default_factory=InputTruth)
    turns: list[TurnTruth] = field(default_factory=list)
    replies: list[ReplyTruth] = field(default_factory=list)
    clears: list[ClearTruth] = field(default_factory=list)
    pacing_lateness_ms: array = field(default_factory=lambda: array("d"))
    """For each agent audio frame: how late it left against the pacer's own schedule."""
    input_arrivals: array = field(default_factory=lambda: array("q"))
    """For each input audio frame up to MAX_INPUT_ARRIVALS, flat: when it was read, and the input
    samples received with it (what a client's end-of-speech anchor is held against); later frames
    are counted in `input.arrivals_dropped`."""

    def add_input_arrival(self, read_ns: int, samples_received: int) -> None:
        """An input frame read at `read_ns`, `samples_received` input samples in all with it."""
        if len(self.input_arrivals) < 2 * MAX_INPUT_ARRIVALS:
            self.input_arrivals.extend((read_ns, samples_received))
        else:
            self.input.arrivals_dropped += 1

    def pacing_summary(self) -> dict[str, Any]:
        values = sorted(self.pacing_lateness_ms)
        if not values:
            return {"count": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}

        def pct(p: float) -> float:
            return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]

        return {"count": len(values), "p50_ms": pct(50), "p99_ms": pct(99), "max_ms": values[-1]}

    def to_dict(self, *, lateness_values: bool = False, input_values: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "clock": "CLOCK_MONOTONIC, nanoseconds",
            "joined_ns": self.joined_ns,
            "call_started_sent_ns": self.call_started_sent_ns,
            "input": asdict(self.input),
            "turns": [asdict(t) for t in self.turns],
            "replies": [asdict(r) for r in self.replies],
            "clears": [asdict(c) for c in self.clears],
            "pacing": self.pacing_summary(),
        }
        if lateness_values:
            out["pacing"]["lateness_ms"] = list(self.pacing_lateness_ms)
        if input_values:
            a = self.input_arrivals
            out["input"]["arrivals"] = [[a[i], a[i + 1]] for i in range(0, len(a), 2)]
        return out


# ---------------------------------------------------------------------------------------------
# The sink agent (sink.py) does none of the above: no endpointing, no pacing, no playback model.
# Its ground truth is what it actually did, in its own shape, so no field above is faked.


@dataclass
class SinkInput:
    frames_received: int = 0
    """Binary websocket frames read to their last byte (a fragmented message counts each frame)."""
    bytes_received: int = 0
    """Payload bytes of those frames as read (not unmasked, never looked at)."""
    first_audio_ns: int | None = None
    """When the first read that carried binary payload arrived (no clock is read per frame)."""
    text_frames_received: int = 0
    pings_answered: int = 0
    """`{"type": "ping"}` data messages answered with a pong."""


@dataclass
class SinkReply:
    """One canned utterance: state speaking, its audio frames, the final transcript, listening."""

    index: int
    kind: str
    """"greeting" or "reply"."""
    text: str
    ordinal: int
    frames: int
    samples: int
    """Audio samples in the frames (the last frame is padded with silence to a whole frame)."""
    bytes: int
    """Bytes handed to the transport in the one write (websocket framing included)."""
    write_ns: int
    """When that write was made."""
    unsent_bytes: int
    """What the transport still held right after the write (0: the kernel took it all)."""


@dataclass
class SinkTruth:
    joined_ns: int | None = None
    call_started_sent_ns: int | None = None
    input: SinkInput = field(default_factory=SinkInput)
    replies: list[SinkReply] = field(default_factory=list)

    def to_dict(self, *, lateness_values: bool = False, input_values: bool = False) -> dict[str, Any]:
        """(The sink reads frames in bulk and times none of them: `input_values` adds nothing.)"""
        return {
            "clock": "CLOCK_MONOTONIC, nanoseconds",
            "agent": "sink",
            "joined_ns": self.joined_ns,
            "call_started_sent_ns": self.call_started_sent_ns,
            "input": asdict(self.input),
            "replies": [asdict(r) for r in self.replies],
        }
