"""One call's timeline: everything that happened, stamped on the host's monotonic clock (ns).

Append-only while the call runs; metrics are a pure function of it afterwards, so a saved
timeline can be re-analysed (`uvbench report DIR`) and a metric bug fixed once for old runs too.

Two kinds of record:
- `events`: a list of `Event(t_ns, kind, data)` for everything discrete (REST, socket, data
  messages in and out, script steps, anchors). Kinds are listed in `EVENT_KINDS` with their data.
- `audio_out` / `audio_in`: one row per audio frame in each direction, kept as flat integer arrays
  because they are the hot path (50 frames a second each way, for every call).
- `audio_out_release`: with a network impairment of the outgoing stream (audio/impairment.py), when
  the impaired link released each chunk, one value per `audio_out` row (`AUDIO_OUT_RELEASE_FIELD`);
  empty without one. The chunk's own row keeps its deadline (`due_ns`) and when it left
  (`sent_ns`); the link's delay is `release_ns - due_ns`, the generator's lateness `sent_ns -
  release_ns`.

Saved (`to_json`, `calls/<stem>.timeline.json`) as one JSON object: the events as lists, the audio
rows as base64 of their raw little-endian int64 values (`audio_out_le64`, `audio_in_le64`), which
reads back several times faster than JSON lists of integers; the releases likewise
(`audio_out_release_le64`), written only when there are any. `from_json` also reads the timelines of
earlier runs, whose audio rows are JSON lists (`audio_out`, `audio_in`), and a timeline without
releases (an earlier run's, or a call without impairment) reads as a stream with no impairment.

Times are `time.monotonic_ns()` values: on Linux all processes of a host share CLOCK_MONOTONIC,
so a local server's ground truth and this timeline compare directly. `wall_epoch` places the
timeline in real time (`wall_epoch_ns` is the wall clock at `mono_epoch_ns`).
"""

from __future__ import annotations

import base64
import binascii
import sys
from array import array
from dataclasses import dataclass, field
from typing import Any, NamedTuple

EVENT_KINDS: dict[str, str] = {
    "call.config": (
        "{scenario, input_sample_rate, output_sample_rate, client_buffer_ms, chunk_ms, honor_clear,"
        " prebuffer_ms, caller, network}: what the metrics need to know about the call (caller and"
        " network: the labels of the caller's audio chain and of the uplink's impairment), written first"
    ),
    "caller.audio": (
        "{chain, snr_db, clipped_samples}: the caller chain applied (call/caller.py), its SNR (null"
        " without noise) and the samples that hit the int16 limits, in the clips and the stream;"
        " written at the stream's end"
    ),
    # REST and connection
    "call.create_sent": "{attempt}",
    "call.create_answered": "{attempt, status, retry_after_s?}",
    "call.created": "{call_id, join_url}",
    "ws.connect_started": "{}",
    "ws.open": "{}",
    "ws.closed": "{code, reason, by: 'client'|'server'}",
    "call.fetched": "{end_reason, ended}: the Call object after the call",
    # Outgoing audio stream
    "pacer.started": "{t0_ns, sample_rate, chunk_samples}: stream sample s is captured at t0 + s/rate",
    "pacer.stopped": (
        "{samples_sent, samples_due, drift_ms}: the stream ended (hang-up, or the socket closed);"
        " samples_due = the audio of every chunk whose deadline had passed by then; drift_ms ="
        " (sent - due) / rate"
    ),
    # Data messages
    "msg.in": "{message}: a parsed server data message (unknown types kept as they came)",
    "msg.in_invalid": "{text, error}: a text frame that is not a data message",
    "msg.out": "{message}: a client data message sent",
    # The script
    "step.started": "{index, kind}",
    "step.finished": "{index, kind, ok, detail?}",
    "utterance.queued": (
        "{step, name, kind: 'say'|'barge_in', file, start_sample, speech_start_sample, speech_end_sample,"
        " end_sample}: stream positions of a scripted utterance (speech bounds from the corpus)"
    ),
    "expect.checked": "{step, ok, what, detail, name}",
    "error": "{where, message, reason}: the call failed here (its outcome says failed:<reason>)",
    "warning": "{where, message}: something went wrong that does not fail the call",
    # The process that ran the call
    "loop.lag": (
        "{period_ns, floor_ns, late: [[fire_ns, lag_ns], ...]}: one event, written at the call's end:"
        " the process's event loop was probed at least every period_ns; each entry is a probe that ran"
        " lag_ns later than it was due, at fire_ns, listed only when lag_ns > floor_ns (stamps taken"
        " near it are uncertain: uvbench.metrics.validity)"
    ),
}


class Event(NamedTuple):
    """One thing that happened (immutable; a named tuple: a call's timeline holds hundreds and a big
    run's report reads millions back, so making one costs a third of a dataclass's)."""

    t_ns: int
    kind: str
    data: dict[str, Any]

    def to_json(self) -> list[Any]:
        return [self.t_ns, self.kind, self.data]


AUDIO_OUT_FIELDS = ("due_ns", "sent_ns", "start_sample", "end_sample")
"""One row per chunk sent: when it was due (its last sample captured), when it left, its range."""
AUDIO_OUT_RELEASE_FIELD = "release_ns"
"""With a network impairment, one value per `audio_out` row: when the impaired link released the
chunk (its deadline delayed by the impairment, rounded up to the sender's 0.5 ms grid); the chunk
left at `sent_ns` >= it."""
AUDIO_IN_FIELDS = ("arrival_ns", "samples", "first_audible", "last_audible")
"""One row per agent audio frame received: arrival, length in samples, and the index inside the
frame of its first and last non-silent sample (-1 when the frame is all silence)."""
AUDIO_ENCODING = "base64 of little-endian int64 values, row after row"
"""How a saved timeline holds its audio rows (`audio_out_le64`, `audio_in_le64`)."""


def _pack(values: array) -> str:
    if sys.byteorder != "little":
        values = array("q", values)
        values.byteswap()
    return base64.b64encode(values.tobytes()).decode("ascii")


def _unpack(text: str) -> array:
    values = array("q")
    values.frombytes(binascii.a2b_base64(text))  # base64.b64decode's work, in half its time
    if sys.byteorder != "little":
        values.byteswap()
    return values


def _rows(a: array) -> list[tuple[int, int, int, int]]:
    return list(zip(a[0::4], a[1::4], a[2::4], a[3::4], strict=True))


@dataclass
class Timeline:
    mono_epoch_ns: int
    wall_epoch_ns: int
    events: list[Event] = field(default_factory=list)
    audio_out: array = field(default_factory=lambda: array("q"))
    audio_in: array = field(default_factory=lambda: array("q"))
    audio_out_release: array = field(default_factory=lambda: array("q"))
    """When each `audio_out` chunk was released by the network impairment; empty without one."""

    raw_in: list[tuple[int, int, str]] = field(default_factory=list)
    """Text frames received and not yet parsed into events: (position in `events`, arrival, text).
    While a call runs its messages are kept as they came (a tuple of an int and a str, which the
    garbage collector stops tracking), not as parsed dicts: at a thousand calls in one process,
    fewer objects for each full collection to walk. `settle_messages` turns them into `msg.in`
    events where they arrived, after the call."""

    def message_in(self, t_ns: int, text: str) -> None:
        self.raw_in.append((len(self.events), t_ns, text))

    def settle_messages(self) -> None:
        """Parse the raw text frames into `msg.in` (or `msg.in_invalid`) events, each at its place."""
        if not self.raw_in:
            return
        from uvbench.protocol import messages as wire

        merged: list[Event] = []
        at = 0
        for position, t_ns, text in self.raw_in:
            merged.extend(self.events[at:position])
            at = position
            parsed = wire.parse_server_message(text)
            if isinstance(parsed, wire.InvalidMessage):
                merged.append(Event(t_ns, "msg.in_invalid", {"text": text[:500], "error": parsed.error}))
            else:
                merged.append(Event(t_ns, "msg.in", {"message": parsed.to_current()}))
        merged.extend(self.events[at:])
        self.events, self.raw_in = merged, []

    def add(self, t_ns: int, kind: str, /, **data: Any) -> Event:
        event = Event(t_ns, kind, data)
        self.events.append(event)
        return event

    def chunk_sent(self, due_ns: int, sent_ns: int, start_sample: int, end_sample: int) -> None:
        self.audio_out.extend((due_ns, sent_ns, start_sample, end_sample))

    def frame_received(self, arrival_ns: int, samples: int, first_audible: int, last_audible: int) -> None:
        self.audio_in.extend((arrival_ns, samples, first_audible, last_audible))

    def clear(self) -> None:
        """Drop everything recorded (once it is saved elsewhere)."""
        self.events = []
        self.raw_in = []
        self.audio_out = array("q")
        self.audio_in = array("q")
        self.audio_out_release = array("q")

    # -- reading -------------------------------------------------------------------------------
    def of_kind(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.kind == kind]

    def first(self, kind: str) -> Event | None:
        return next((e for e in self.events if e.kind == kind), None)

    def messages_in(self, type_: str | None = None) -> list[Event]:
        return [
            e
            for e in self.events
            if e.kind == "msg.in" and (type_ is None or e.data["message"].get("type") == type_)
        ]

    def audio_out_rows(self) -> list[tuple[int, int, int, int]]:
        return _rows(self.audio_out)

    def audio_in_rows(self) -> list[tuple[int, int, int, int]]:
        return _rows(self.audio_in)

    @property
    def impaired(self) -> bool:
        """Whether the outgoing stream went through a network impairment (its releases recorded)."""
        return len(self.audio_out_release) > 0

    # -- saving --------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The timeline as saved: a JSON object, its audio rows packed (see the module doc). Text
        frames still held raw are parsed first: a saved timeline has only events."""
        self.settle_messages()
        saved = {
            "clock": "CLOCK_MONOTONIC, nanoseconds",
            "mono_epoch_ns": self.mono_epoch_ns,
            "wall_epoch_ns": self.wall_epoch_ns,
            "events": [e.to_json() for e in self.events],
            "audio_encoding": AUDIO_ENCODING,
            "audio_out_fields": list(AUDIO_OUT_FIELDS),
            "audio_out_le64": _pack(self.audio_out),
            "audio_in_fields": list(AUDIO_IN_FIELDS),
            "audio_in_le64": _pack(self.audio_in),
        }
        if self.audio_out_release:
            saved["audio_out_release_field"] = AUDIO_OUT_RELEASE_FIELD
            saved["audio_out_release_le64"] = _pack(self.audio_out_release)
        return saved

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Timeline:
        """A saved timeline: this version's (packed audio rows) or an earlier run's (JSON lists)."""
        timeline = cls(data["mono_epoch_ns"], data["wall_epoch_ns"])
        timeline.events = list(map(Event._make, data["events"]))
        for direction in ("audio_out", "audio_in"):
            packed = data.get(f"{direction}_le64")
            rows = _unpack(packed) if isinstance(packed, str) else array("q", data[direction])
            if len(rows) % 4:
                raise ValueError(f"{direction}: {len(rows)} values are not rows of 4")
            setattr(timeline, direction, rows)
        packed = data.get("audio_out_release_le64")
        if isinstance(packed, str):
            releases = _unpack(packed)
            if len(releases) * 4 != len(timeline.audio_out):
                raise ValueError(
                    f"audio_out_release: {len(releases)} values for {len(timeline.audio_out) // 4} "
                    "audio_out rows; a release is one value per row"
                )
            timeline.audio_out_release = releases
        return timeline
