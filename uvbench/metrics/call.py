"""One call's figures, as a pure function of its timeline (docs/metrics.md is the contract).

`compute(timeline)` replays the call's agent audio through the simulated listener
(`uvbench.listener`), places every scripted utterance on the outgoing stream's clock, and measures
each turn, each barge-in and the call as a whole. It reads nothing but the timeline, so a saved run
can be re-analysed and a metric fixed once for old runs too.

Conventions (each figure's own anchor, end point and unit are in `GLOSSARY`):
- Times are integer ns on the call's monotonic clock; figures are ms (float), counts (int) or
  percentages. Stream time of input sample `s` is `t0 + s * 1e9 / input_sample_rate`, rounded to
  the nearest ns (half up), with `t0` from `pacer.started`.
- A turn's *reply window* runs from its `t_se` to the next scripted utterance's `t_ss` (say or
  barge-in), or without end for the last one. The reply is the agent audio whose frames arrive in
  that window; a turn whose window holds no frame heard with a non-silent sample is *missed*:
  `missed: true`, all its latency figures None, the call `failed:missed_turn`.
- Agent utterances are told apart by the messages that end them: an agent `transcript` with
  `final: true`, a `state` other than "speaking" after "speaking", or a `playback_clear_buffer`.
  Each audio frame belongs to the utterance in progress when it arrived.
- A figure that cannot be measured is None, never 0 and never dropped.
- A figure the load generator cannot vouch for (its anchor's chunks left late, or the event loop
  lagged at one of its stamps: `uvbench.metrics.validity`, docs/metrics.md) is *set apart*: moved
  from `metrics` to `set_apart` with its reason. The call is invalid only when its stream drifted
  or every anchored item was set apart.
"""

from __future__ import annotations

import bisect
import math
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import numpy as np

from uvbench.call.timeline import Event, Timeline
from uvbench.listener import Listener, ListenerConfig, Playback
from uvbench.metrics import validity
from uvbench.metrics.validity import CALL_FIGURES, INTERRUPT_FIGURES, TURN_FIGURES, LoopLag

NS = 1_000_000_000
MS = 1_000_000

Value = float | int | str | None

GLOSSARY: dict[str, dict[str, str]] = {
    # -- per turn (a scripted "say" utterance and the agent's reply) ---------------------------
    "turn.ttfb_ms": {
        "from": "t_se: stream time of the end of the utterance's last speech sample",
        "to": "arrival of the first agent audio frame (silent or not) in the reply window",
        "unit": "ms",
    },
    "turn.ttfa_ms": {
        "from": "t_se",
        "to": "the simulated listener hears the first non-silent sample of the reply (prebuffer included)",
        "unit": "ms",
    },
    "turn.thinking_ms": {
        "from": "t_se",
        "to": "the first `state: thinking` message in the reply window (the server's endpointing)",
        "unit": "ms",
    },
    "turn.agent_transcript_ms": {
        "from": "t_se",
        "to": "the first agent `transcript` message in the reply window",
        "unit": "ms",
    },
    "turn.user_transcript_ms": {
        "from": "t_se",
        "to": "the first final user (voice) `transcript` message in the reply window",
        "unit": "ms",
    },
    "turn.agent_audio_ms": {
        "from": "the first non-silent sample of the reply heard",
        "to": "the next scripted utterance's t_ss (or no end): time non-silent agent audio is heard",
        "unit": "ms",
    },
    "turn.underflow_count": {
        "from": "arrival of the reply's first frame",
        "to": "the next scripted utterance's t_ss (or no end): underflows that started in between",
        "unit": "count",
    },
    "turn.underflow_ms": {
        "from": "each of those underflows' start (the buffer ran dry)",
        "to": "its end (the next frame arrived, or the call's end if none did), summed",
        "unit": "ms",
    },
    "turn.talk_over_ms": {
        "from": "t_ss: stream time of the utterance's first speech sample",
        "to": "t_se: time non-silent agent audio is heard while the user speaks",
        "unit": "ms",
    },
    "turn.network_delay_ms": {
        "from": "the deadline of the chunk holding the utterance's last speech sample",
        "to": "its release by the call's network impairment (None without one): how much later the "
        "agent could hear the end of speech",
        "unit": "ms",
    },
    "turn.ttfa_heard_ms": {
        "from": "the release of the chunk holding the utterance's last speech sample (None without a "
        "network impairment): when the agent could first have heard the end of speech",
        "to": "the simulated listener hears the first non-silent sample of the reply (as turn.ttfa_ms)",
        "unit": "ms",
    },
    # -- per barge-in (a scripted "barge_in" utterance) ----------------------------------------
    "interrupt.clear_ms": {
        "from": "t_bi: stream time of the interrupting utterance's first speech sample",
        "to": "the first `playback_clear_buffer` received in its window",
        "unit": "ms",
    },
    "interrupt.last_audio_ms": {
        "from": "t_bi",
        "to": "arrival of the last audio frame of the interrupted agent utterance (negative when the "
        "server had sent all of it before t_bi)",
        "unit": "ms",
    },
    "interrupt.silence_ms": {
        "from": "t_bi",
        "to": "the listener stops hearing the interrupted utterance: the end of its last non-silent "
        "audio heard (cut by an honoured clear), or t_bi if none is heard after it",
        "unit": "ms",
    },
    "interrupt.talk_over_ms": {
        "from": "t_bi",
        "to": "t_be (end of the interrupting speech): time non-silent agent audio is heard meanwhile",
        "unit": "ms",
    },
    "interrupt.response_ms": {
        "from": "t_be: stream time of the end of the interrupting utterance's last speech sample",
        "to": "the listener hears the first non-silent sample of the agent's next utterance",
        "unit": "ms",
    },
    "interrupt.success_pct": {
        "from": "barge-ins that had an agent utterance to interrupt",
        "to": "share of them not failed (failed: no clear received and the utterance played out)",
        "unit": "%",
    },
    # -- per call --------------------------------------------------------------------------------
    "call.create_ms": {
        "from": "`call.create_sent` of the attempt that succeeded (POST sent)",
        "to": "`call.created` (201 received)",
        "unit": "ms",
    },
    "call.join_ms": {"from": "`ws.connect_started`", "to": "`ws.open`", "unit": "ms"},
    "call.started_ms": {"from": "`ws.open`", "to": "the `call_started` message received", "unit": "ms"},
    "call.first_audio_ms": {
        "from": "`ws.open`",
        "to": "the listener hears the first non-silent agent sample (greeting latency)",
        "unit": "ms",
    },
    "call.ping_rtt_ms": {
        "from": "a `ping` data message sent",
        "to": "the `pong` echoing its timestamp received; mean over the call (all in ping_rtts_ms)",
        "unit": "ms",
    },
    "call.duration_ms": {"from": "`ws.open`", "to": "`ws.closed`", "unit": "ms"},
    "call.max_buffered_ms": {
        "from": "call",
        "to": "call: the maximum of the listener's buffer B(t) (received - played), as audio length",
        "unit": "ms",
    },
    "call.underflow_count": {"from": "call", "to": "call: every underflow", "unit": "count"},
    "call.agent_audio_ms": {
        "from": "call",
        "to": "call: agent audio heard (non-silent samples the listener played), greeting and turns",
        "unit": "ms",
    },
    "call.malformed_count": {
        "from": "call",
        "to": "call: text frames from the server that are not data messages (not JSON, no type, ...)",
        "unit": "count",
    },
    "call.underflow_ms": {"from": "call", "to": "call: every underflow's length, summed", "unit": "ms"},
    "call.false_barge_in_count": {
        "from": "call",
        "to": "call: `playback_clear_buffer` messages no scripted cause explains: the agent stopped "
        "as if interrupted while the caller neither spoke over it (a say or barge_in whose speech "
        "it could have heard, up to CLAIM_MS after) nor sent a message that interrupts",
        "unit": "count",
    },
    "call.network_delay_p50_ms": {
        "from": "each outgoing chunk's deadline",
        "to": "its release by the call's network impairment; median over the call's chunks (linear "
        "interpolation; None without an impairment)",
        "unit": "ms",
    },
    "call.network_delay_max_ms": {
        "from": "each outgoing chunk's deadline",
        "to": "its release by the call's network impairment; maximum (None without an impairment)",
        "unit": "ms",
    },
    "call.end_reason": {"from": "`call.fetched`", "to": "the Call's endReason", "unit": "text"},
    "call.outcome": {
        "from": "the whole timeline",
        "to": "completed | failed:<create|connect|error|server_close|missed_turn|expect> | "
        "invalid:generator_overloaded (the stream drifted more than a chunk, or every anchored item "
        "of the call, its turns, barge-ins and greeting, was set apart: docs/metrics.md, validity) | "
        "interrupted (the run stopped while the call ran: Ctrl-C, SIGTERM, a graceful stop; its "
        "figures are those measured until then)",
        "unit": "text",
    },
    # -- generator health ------------------------------------------------------------------------
    "pacer.lateness_p50_ms": {
        "from": "each chunk's due time (its last sample captured), or with a network impairment its "
        "release (the impairment's delay is call.network_delay_*, never the generator's lateness)",
        "to": "its send time; median over the call's chunks (linear interpolation)",
        "unit": "ms",
    },
    "pacer.lateness_p99_ms": {
        "from": "each chunk's due time (its release with a network impairment)",
        "to": "its send time; 99th pct",
        "unit": "ms",
    },
    "pacer.lateness_max_ms": {
        "from": "each chunk's due time (its release with a network impairment)",
        "to": "its send time; maximum",
        "unit": "ms",
    },
    "pacer.drift_ms": {
        "from": "audio due at the pacer's stop",
        "to": "audio sent at the pacer's stop (`pacer.stopped` drift_ms)",
        "unit": "ms",
    },
    "pacer.loop_lag_max_ms": {
        "from": "each late probe of the calling process's event loop (`loop.lag` event): when it was due",
        "to": "when it ran; the largest such lag (0 when none was listed, None without the event)",
        "unit": "ms",
    },
}
"""Every figure: its anchor (`from`), its end point (`to`) and its unit."""

CALL_METRICS = tuple(name for name in GLOSSARY if name.split(".")[0] in ("call", "pacer")) + (
    "interrupt.success_pct",
)
TURN_METRICS = tuple(name for name in GLOSSARY if name.startswith("turn."))
INTERRUPT_METRICS = tuple(
    name for name in GLOSSARY if name.startswith("interrupt.") and name != "interrupt.success_pct"
)

OK_CLOSE_CODES = (1000, 1001)
CLAIM_MS = 1000
"""How long after the end of the caller's speech (as the agent could hear it) or an interrupting
message a `playback_clear_buffer` may still be that cause's doing. An agent decides to stop while
it hears the speech (after its minimum interruption length); past the end, only the way back to
the client is left, well under a second on any link worth measuring."""
INTERRUPTING_MESSAGES = frozenset(
    ("user_text_message", "input_text_message", "forced_agent_message", "hang_up")
)
"""Client messages an agent stops speaking for: each may explain one clear (`call.false_barge_in_count`)."""
_FIRST = itemgetter(0)


@dataclass
class CallMetrics:
    """A call's figures, under the names of docs/metrics.md ("Where the figures live")."""

    metrics: dict[str, Value]
    """Call-level figures, keyed by the names in `CALL_METRICS` (less those in `set_apart`)."""
    turns: list[dict[str, Any]] = field(default_factory=list)
    """Per turn: index, step, file, missed, `metrics` (`TURN_METRICS`), `set_apart`, `validity`,
    `anchor_lateness_ms` and absolute ns anchors."""
    barge_ins: list[dict[str, Any]] = field(default_factory=list)
    """Per barge-in: index, step, file, success, missed, `metrics` (`INTERRUPT_METRICS`), `set_apart`,
    `validity`, `anchor_lateness_ms`, anchors."""
    underflows: list[dict[str, Any]] = field(default_factory=list)
    """Every underflow of the call: start_ns, end_ns, ms (and open_at_end: true for one the call
    ended in, which runs to the call's end)."""
    outcome: str = "completed"
    outcome_detail: str | None = None
    """Why the call failed or is invalid, in a line; None when completed."""
    ping_rtts_ms: list[float] = field(default_factory=list)
    false_barge_ins: list[dict[str, Any]] = field(default_factory=list)
    """Each clear no scripted cause explains (`call.false_barge_in_count`): clear_ns, and cut_from_ns,
    the arrival of the first frame of the agent utterance it cut (None when none was under way)."""
    anchors: dict[str, int | None] = field(default_factory=dict)
    """Call-level anchors as absolute monotonic ns (t0, ws_open, first_audible, ...)."""
    set_apart: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Call-level figures the generator cannot vouch for, out of `metrics`: {name: {value, reason}}
    (`uvbench.metrics.validity`)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "metrics": dict(self.metrics),
            "set_apart": _copy_set_apart(self.set_apart),
            "turns": [_copy(t) for t in self.turns],
            "barge_ins": [_copy(b) for b in self.barge_ins],
            "underflows": [dict(u) for u in self.underflows],
            "outcome": self.outcome,
            "outcome_detail": self.outcome_detail,
            "ping_rtts_ms": list(self.ping_rtts_ms),
            "false_barge_ins": [dict(f) for f in self.false_barge_ins],
            "anchors": dict(self.anchors),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CallMetrics:
        return cls(
            metrics=dict(data["metrics"]),
            turns=[_copy(t) for t in data.get("turns", [])],
            barge_ins=[_copy(b) for b in data.get("barge_ins", [])],
            underflows=[dict(u) for u in data.get("underflows", [])],
            outcome=data.get("outcome", "completed"),
            outcome_detail=data.get("outcome_detail"),
            ping_rtts_ms=list(data.get("ping_rtts_ms", [])),
            false_barge_ins=[dict(f) for f in data.get("false_barge_ins") or ()],
            anchors=dict(data.get("anchors", {})),
            set_apart=_copy_set_apart(data.get("set_apart") or {}),
        )


def _copy_set_apart(set_apart: dict[str, Any]) -> dict[str, Any]:
    return {name: dict(entry) for name, entry in set_apart.items()}


def _copy(record: dict[str, Any]) -> dict[str, Any]:
    out = dict(record)
    if isinstance(out.get("metrics"), dict):
        out["metrics"] = dict(out["metrics"])
    if isinstance(out.get("set_apart"), dict):
        out["set_apart"] = _copy_set_apart(out["set_apart"])
    return out


# ------------------------------------------------------------------------------------------------
# Reading the timeline


@dataclass(frozen=True)
class _Config:
    input_rate: int
    output_rate: int
    client_buffer_ms: float | None
    chunk_ms: float | None
    honor_clear: bool
    prebuffer_ms: float


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value) if math.isfinite(value) else None


def _positive_int(value: Any) -> int | None:
    v = _int(value)
    return v if v is not None and v > 0 else None


def _read_config(timeline: Timeline) -> tuple[_Config, int | None]:
    config = timeline.first("call.config")
    data = config.data if config is not None else {}
    pacer = timeline.first("pacer.started")
    pdata = pacer.data if pacer is not None else {}
    input_rate = _positive_int(data.get("input_sample_rate")) or _positive_int(pdata.get("sample_rate"))
    input_rate = input_rate or 16000
    output_rate = _positive_int(data.get("output_sample_rate")) or input_rate
    chunk_ms = _number(data.get("chunk_ms"))
    chunk_samples = _positive_int(pdata.get("chunk_samples"))
    if chunk_ms is None and chunk_samples is not None:
        chunk_ms = chunk_samples * 1000 / input_rate
    t0: int | None = None
    if pacer is not None:
        t0 = _int(pdata.get("t0_ns"))
        if t0 is None:
            t0 = pacer.t_ns
    honor = data.get("honor_clear", True)
    return (
        _Config(
            input_rate=input_rate,
            output_rate=output_rate,
            client_buffer_ms=_number(data.get("client_buffer_ms")),
            chunk_ms=chunk_ms,
            honor_clear=honor if isinstance(honor, bool) else True,
            prebuffer_ms=max(0.0, _number(data.get("prebuffer_ms")) or 0.0),
        ),
        t0,
    )


def _message(event: Event) -> dict[str, Any] | None:
    data = event.data if isinstance(event.data, dict) else {}
    message = data.get("message")
    return message if isinstance(message, dict) else None


def _ms(start_ns: int | None, end_ns: int | None) -> float | None:
    if start_ns is None or end_ns is None:
        return None
    return (end_ns - start_ns) / MS


def _percentile(ordered: Sequence[float], p: float) -> float | None:
    """The p-th percentile of sorted values, interpolating linearly between closest ranks."""
    if not ordered:
        return None
    rank = p / 100 * (len(ordered) - 1)
    lo = math.floor(rank)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


@dataclass
class _Replay:
    """The listener's playback plus what the messages said about agent utterances."""

    playback: Playback
    arrival: list[int]
    utterance_of: list[int]
    """Per frame, the agent utterance it belongs to (increasing with the frame index)."""
    utterance_frames: dict[int, tuple[int, int]]
    """Per agent utterance, its first and last frame index."""
    utterance_end: dict[int, int]
    """Per agent utterance, when the message that ended it arrived (absent: never ended)."""
    clears: list[int]
    clear_cuts: list[int | None]
    """Per clear, the arrival of the first frame of the agent utterance it cut (None: none open)."""
    thinking: list[int]
    agent_transcripts: list[int]
    user_finals: list[int]
    call_started: list[int]
    pongs: list[tuple[int, float]]


def _replay(timeline: Timeline, config: _Config) -> _Replay:
    rows = sorted(timeline.audio_in_rows(), key=_FIRST)
    messages = sorted(
        ((e.t_ns, m) for e in timeline.events if e.kind == "msg.in" and (m := _message(e)) is not None),
        key=lambda item: item[0],
    )
    listener = Listener(
        ListenerConfig(
            sample_rate=config.output_rate,
            honor_clear=config.honor_clear,
            prebuffer_ms=config.prebuffer_ms,
            client_buffer_ms=config.client_buffer_ms,
        )
    )
    arrival: list[int] = []
    utterance_of: list[int] = []
    utterance_frames: dict[int, tuple[int, int]] = {}
    utterance_end: dict[int, int] = {}
    clears: list[int] = []
    clear_cuts: list[int | None] = []
    thinking: list[int] = []
    agent_transcripts: list[int] = []
    user_finals: list[int] = []
    call_started: list[int] = []
    pongs: list[tuple[int, float]] = []
    utterance = 0
    open_frames = False
    """Whether the utterance in progress has a frame with audio (from `opened` to `extended`)."""
    opened = extended = 0
    state: str | None = None

    def boundary(t_ns: int) -> None:
        nonlocal utterance, open_frames
        if open_frames:
            utterance_frames[utterance] = (opened, extended)
            utterance_end[utterance] = t_ns
            utterance += 1
            open_frames = False

    on_audio = listener.on_audio
    n_rows = len(rows)
    i = 0
    last_t = 0
    for t_message, m in [*messages, (None, None)]:  # the last entry: the frames after every message
        # On a tie the frame goes first: it was received, then the message acted on it.
        while i < n_rows and (t_message is None or rows[i][0] <= t_message):
            t, samples, first, last = rows[i]
            if samples < 0:
                samples = 0
            on_audio(t, samples, first, last)
            utterance_of.append(utterance)
            if samples > 0:  # an empty frame carries no audio: it neither opens nor extends one
                if not open_frames:
                    opened = i
                    open_frames = True
                extended = i
            last_t = t
            i += 1
        if m is None:
            break
        t = t_message
        last_t = t
        kind = m.get("type")
        if kind == "playback_clear_buffer":
            listener.on_clear(t)
            clears.append(t)
            clear_cuts.append(rows[opened][0] if open_frames else None)
            boundary(t)
        elif kind == "transcript":
            role = m.get("role")
            if role == "agent":
                agent_transcripts.append(t)
                if m.get("final") is True:
                    listener.on_utterance_end(t)
                    boundary(t)
            elif role == "user" and m.get("final") is True and m.get("medium") != "text":
                user_finals.append(t)
        elif kind == "state":
            new = m.get("state")
            if isinstance(new, str):
                if state == "speaking" and new != "speaking":
                    listener.on_utterance_end(t)
                    boundary(t)
                if new == "thinking":
                    thinking.append(t)
                state = new
        elif kind == "call_started":
            call_started.append(t)
        elif kind == "pong":
            stamp = _number(m.get("timestamp"))
            if stamp is not None:
                pongs.append((t, stamp))
    if open_frames:
        utterance_frames[utterance] = (opened, extended)
    arrival.extend(row[0] for row in rows)
    end = max([last_t] + [e.t_ns for e in timeline.events])
    return _Replay(
        playback=listener.finish(end),
        arrival=arrival,
        utterance_of=utterance_of,
        utterance_frames=utterance_frames,
        utterance_end=utterance_end,
        clears=clears,
        clear_cuts=clear_cuts,
        thinking=thinking,
        agent_transcripts=agent_transcripts,
        user_finals=user_finals,
        call_started=call_started,
        pongs=pongs,
    )


def _first_in(times: list[int], start: int, end: int | None) -> int | None:
    """The first time in sorted `times` inside [start, end)."""
    k = bisect.bisect_left(times, start)
    if k < len(times) and (end is None or times[k] < end):
        return times[k]
    return None


def _first_frame(replay: _Replay, start_index: int, arrive_before: int | None) -> int | None:
    """Arrival of the first frame holding audio from `start_index` on, if before `arrive_before`."""
    samples = replay.playback.samples
    for i in range(start_index, len(replay.arrival)):
        if arrive_before is not None and replay.arrival[i] >= arrive_before:
            return None
        if samples[i] > 0:
            return replay.arrival[i]
    return None


def _first_heard(replay: _Replay, start_index: int, arrive_before: int | None) -> int | None:
    """The first frame from `start_index` on, arrived before `arrive_before`, of which the listener
    hears a non-silent sample (`_heard_at` says when)."""
    pb = replay.playback
    for i in range(start_index, len(replay.arrival)):
        if arrive_before is not None and replay.arrival[i] >= arrive_before:
            return None
        if pb.frame_audible[i] is not None:
            return i
    return None


def _heard_at(replay: _Replay, frame: int | None) -> int | None:
    """When the listener starts hearing `frame`'s non-silent samples."""
    span = replay.playback.frame_audible[frame] if frame is not None else None
    return span[0] if span is not None else None


def _arrival(replay: _Replay, frame: int | None) -> int | None:
    return replay.arrival[frame] if frame is not None else None


def _frame_heard_from(replay: _Replay, t_ns: int | None) -> int | None:
    """The frame whose non-silent samples are heard from `t_ns` (the one holding that sample)."""
    if t_ns is None:
        return None
    for k, span in enumerate(replay.playback.frame_audible):
        if span is not None and span[0] <= t_ns < span[1]:
            return k
    return None


# ------------------------------------------------------------------------------------------------
# The figures


@dataclass(frozen=True)
class _Utterance:
    kind: str
    step: Any
    file: Any
    name: Any
    t_ss: int
    t_se: int
    first_sample: int
    """Its first speech sample (speech_start_sample): the anchor of a barge-in."""
    last_sample: int
    """Its last speech sample (speech_end_sample - 1): the anchor of a turn."""


class _Chunks:
    """The outgoing chunks (the timeline's audio_out rows) in stream order, as int64 columns: what
    `validity.anchor_chunks` and `anchor_lateness_ns` do over `Chunk` tuples, without making a
    Python object per chunk (a call has fifty a second).

    With a network impairment (`release`: the timeline's `audio_out_release`, one value per row) a
    chunk's lateness is counted from its release, not its deadline: the link's delay is no fault
    of the generator, and sets nothing apart. A release column that does not match the rows one
    for one is not read (the call reads as unimpaired)."""

    def __init__(self, audio_out: Any, release: Any = None) -> None:
        rows = _int64(audio_out).reshape(-1, 4)
        released = _int64(release) if release is not None and len(release) else None
        if released is not None and len(released) != len(rows):
            released = None
        start = rows[:, 2]
        if len(start) > 1 and bool((start[1:] < start[:-1]).any()):  # out of stream order
            order = np.argsort(start, kind="stable")
            rows = rows[order]
            released = released[order] if released is not None else None
        self.due, self.start, self.end = rows[:, 0], rows[:, 2], rows[:, 3]
        self.release = released
        """When the network impairment released each chunk, ns; None without one."""
        self.late = rows[:, 1] - (rows[:, 0] if released is None else released)
        """sent - due (sent - release with an impairment) of each chunk, ns."""

    def holding(self, sample: int) -> int | None:
        """The index of the chunk holding stream sample `sample`; None when none does."""
        k = int(np.searchsorted(self.start, sample, side="right")) - 1
        if k < 0 or not self.start[k] <= sample < self.end[k]:
            return None
        return k

    def heard_by(self, sample: int) -> tuple[int, int] | None:
        """(release, release - due) of the chunk holding `sample`: when the agent could first have
        heard it, and how much the network impairment delayed it. None without an impairment or
        when no chunk holds the sample."""
        if self.release is None:
            return None
        k = self.holding(sample)
        if k is None:
            return None
        release = int(self.release[k])
        return release, release - int(self.due[k])

    def network_delay_ms(self) -> _SortedMs | None:
        """Every chunk's release - due in ms, sorted; None without an impairment."""
        if self.release is None:
            return None
        return _SortedMs(np.sort(self.release - self.due))

    def anchor_lateness(self, sample: int, window_end: int) -> int | None:
        """`validity.anchor_lateness_ns(validity.anchor_chunks(chunks, sample, window_end))`: the
        chunk holding `sample`, then every later one due before `window_end` (lateness from the
        release with an impairment)."""
        k = self.holding(sample)
        if k is None:
            return None
        reached = self.due[k + 1 :] >= window_end
        stop = k + 1 + (int(reached.argmax()) if reached.any() else len(reached))
        return int(self.late[k:stop].max())

    def lateness_ms(self) -> _SortedMs:
        """Every chunk's sent - due in ms, sorted (read as a list by `_percentile`)."""
        return _SortedMs(np.sort(self.late))


def _int64(values: Any) -> np.ndarray:
    if isinstance(values, array) and values.itemsize == 8:
        return np.frombuffer(values, dtype=np.int64)
    return np.asarray(values, dtype=np.int64)


class _SortedMs(Sequence[float]):
    """Sorted ns values read as ms: item k is `int(ns[k]) / MS`, exactly the float of the integer."""

    def __init__(self, ns: np.ndarray) -> None:
        self._ns = ns

    def __len__(self) -> int:
        return len(self._ns)

    def __getitem__(self, k: int) -> float:  # type: ignore[override]
        return int(self._ns[k]) / MS


@dataclass(frozen=True)
class _Judge:
    """What the validity verdicts need (`uvbench.metrics.validity`)."""

    chunks: _Chunks
    """The outgoing chunks, in stream order."""
    loop: LoopLag | None
    tolerance: int | None
    lags: validity.LagIndex | None = None
    """`loop`, indexed."""

    def anchor_lateness(self, sample: int, window_end: int) -> int | None:
        return self.chunks.anchor_lateness(sample, window_end)

    def late(self, lateness: int | None) -> bool:
        return self.tolerance is not None and lateness is not None and lateness > self.tolerance

    def reasons(
        self, names: tuple[str, ...], anchor_late: bool, stamps: dict[str, tuple[int | None, ...]]
    ) -> dict[str, str]:
        return validity.set_apart_reasons(
            names, anchor_late=anchor_late, stamps=stamps, loop=self.lags, tolerance=self.tolerance
        )


def _utterances(timeline: Timeline, config: _Config, t0: int | None) -> list[_Utterance]:
    if t0 is None:
        return []
    rate = config.input_rate

    def stream_ns(sample: int) -> int:
        return t0 + (2 * sample * NS + rate) // (2 * rate)

    found: list[tuple[int, int, _Utterance]] = []
    for n, event in enumerate(timeline.of_kind("utterance.queued")):
        data = event.data if isinstance(event.data, dict) else {}
        kind = data.get("kind")
        start = _int(data.get("speech_start_sample"))
        end = _int(data.get("speech_end_sample"))
        if start is None:
            start = _int(data.get("start_sample"))
        if end is None:
            end = _int(data.get("end_sample"))
        if kind not in ("say", "barge_in") or start is None or end is None:
            continue
        end = max(start, end)
        u = _Utterance(
            kind,
            data.get("step"),
            data.get("file"),
            data.get("name"),
            stream_ns(start),
            stream_ns(end),
            first_sample=start,
            last_sample=max(start, end - 1),
        )
        found.append((u.t_ss, n, u))
    return [u for _, _, u in sorted(found, key=lambda x: (x[0], x[1]))]


def _underflows_in(playback: Playback, start: int | None, end: int | None) -> list[int]:
    if start is None:
        return []
    return [
        u.duration_ns
        for u in playback.underflows
        if u.start_ns >= start and (end is None or u.start_ns < end)
    ]


def _turn(
    replay: _Replay, u: _Utterance, index: int, window_end: int | None, judge: _Judge
) -> dict[str, Any]:
    pb = replay.playback
    first_index = bisect.bisect_left(replay.arrival, u.t_se)
    first_audio = _first_frame(replay, first_index, window_end)
    heard_frame = _first_heard(replay, first_index, window_end)
    first_audible = _heard_at(replay, heard_frame)
    missed = first_audible is None
    thinking = _first_in(replay.thinking, u.t_se, window_end)
    agent_transcript = _first_in(replay.agent_transcripts, u.t_se, window_end)
    user_transcript = _first_in(replay.user_finals, u.t_se, window_end)
    underflows = _underflows_in(pb, first_audio, window_end)
    heard = 0 if first_audible is None else pb.audible_ns_between(first_audible, window_end)
    # With a network impairment: when the agent could have had the whole of the speech.
    network = judge.chunks.heard_by(u.last_sample)
    heard_by = None if network is None else network[0]
    metrics: dict[str, Value] = {
        "turn.ttfb_ms": None if missed else _ms(u.t_se, first_audio),
        "turn.ttfa_ms": None if missed else _ms(u.t_se, first_audible),
        "turn.thinking_ms": None if missed else _ms(u.t_se, thinking),
        "turn.agent_transcript_ms": None if missed else _ms(u.t_se, agent_transcript),
        "turn.user_transcript_ms": None if missed else _ms(u.t_se, user_transcript),
        "turn.agent_audio_ms": heard / MS,
        "turn.underflow_count": len(underflows),
        "turn.underflow_ms": sum(underflows) / MS,
        "turn.talk_over_ms": pb.audible_ns_between(u.t_ss, u.t_se) / MS,
        "turn.network_delay_ms": None if network is None else network[1] / MS,
        "turn.ttfa_heard_ms": None if missed else _ms(heard_by, first_audible),
    }
    anchor_end = validity.turn_anchor_end(u.t_se, first_audio, window_end)
    lateness = judge.anchor_lateness(u.last_sample, anchor_end)
    # A missed turn stays missed: a sender late by less than a second cannot explain no answer.
    stamps = {
        "turn.ttfb_ms": (first_audio,),
        "turn.ttfa_ms": (_arrival(replay, heard_frame),),
        "turn.ttfa_heard_ms": (_arrival(replay, heard_frame),),
        "turn.thinking_ms": (thinking,),
        "turn.agent_transcript_ms": (agent_transcript,),
        "turn.user_transcript_ms": (user_transcript,),
    }
    reasons = {} if missed else judge.reasons(TURN_FIGURES, judge.late(lateness), stamps)
    kept, set_apart = validity.split(metrics, reasons)
    return {
        "index": index,
        "step": u.step,
        "name": u.name,
        "file": u.file,
        "missed": missed,
        "metrics": kept,
        "set_apart": set_apart,
        "validity": validity.validity_of(set_apart),
        "anchor_lateness_ms": None if lateness is None else lateness / MS,
        "t_ss_ns": u.t_ss,
        "t_se_ns": u.t_se,
        "window_end_ns": window_end,
        "anchor_window_end_ns": anchor_end,
        "first_audio_ns": first_audio,
        "first_audible_ns": first_audible,
        "thinking_ns": thinking,
        "agent_transcript_ns": agent_transcript,
        "user_transcript_ns": user_transcript,
        "heard_by_ns": heard_by,
    }


def _interrupted(replay: _Replay, t_bi: int) -> int | None:
    """The agent utterance the barge-in interrupts: the one heard at `t_bi`, else the one whose
    audio last arrived if it had not ended by then; None when the agent was not speaking."""
    pb = replay.playback
    last = bisect.bisect_right(replay.arrival, t_bi) - 1
    for k in range(last, -1, -1):
        start = pb.play_start_ns[k]
        if start is None or start > t_bi:
            continue  # dropped, or still queued behind the frame playing now
        end = pb.frame_end_ns[k]
        if end is not None and end > t_bi:
            return replay.utterance_of[k]
        break
    while last >= 0 and pb.samples[last] == 0:
        last -= 1
    if last < 0:
        return None
    utterance = replay.utterance_of[last]
    ended = replay.utterance_end.get(utterance)
    return utterance if ended is None or ended > t_bi else None


def _barge_in(
    replay: _Replay, u: _Utterance, index: int, window_end: int | None, judge: _Judge
) -> dict[str, Any]:
    pb = replay.playback
    t_bi, t_be = u.t_ss, u.t_se
    target = _interrupted(replay, t_bi)
    clear = _first_in(replay.clears, t_bi, window_end)
    last_audio = silent = silence_stamp = None
    success: bool | None = None
    reply_from = bisect.bisect_left(replay.arrival, t_be)
    if target is not None:
        first, last = replay.utterance_frames[target]
        last_audio = replay.arrival[last]
        heard_frames = [k for k in range(first, last + 1) if pb.frame_audible[k] is not None]
        heard_until = max((pb.frame_audible[k][1] for k in heard_frames), default=t_bi)  # type: ignore[index]
        # docs/metrics.md: the listener stops hearing the agent when the clear is honoured, or when its
        # buffer has drained (clear ignored); without a clear, when the utterance's sound ends.
        effect = next((c for c in pb.clears if c.t_ns == clear), None) if clear is not None else None
        silent = max(t_bi, effect.silent_at_ns if effect is not None else heard_until)
        if effect is not None and effect.honoured:
            silence_stamp = clear  # the clear cut the audio
        elif heard_frames:
            silence_stamp = replay.arrival[heard_frames[-1]]
        played_out = all(pb.played_samples[k] == pb.samples[k] for k in range(first, last + 1))
        success = clear is not None or not played_out
        reply_from = max(reply_from, last + 1)
    response_frame = _first_heard(replay, reply_from, window_end)
    response = _heard_at(replay, response_frame)
    metrics: dict[str, Value] = {
        "interrupt.clear_ms": _ms(t_bi, clear),
        "interrupt.last_audio_ms": _ms(t_bi, last_audio),
        "interrupt.silence_ms": _ms(t_bi, silent),
        "interrupt.talk_over_ms": pb.audible_ns_between(t_bi, t_be) / MS,
        "interrupt.response_ms": _ms(t_be, response),
    }
    anchor_end = validity.barge_in_anchor_end(t_bi, response, silent, window_end)
    lateness = judge.anchor_lateness(u.first_sample, anchor_end)
    stamps = {
        "interrupt.clear_ms": (clear,),
        "interrupt.last_audio_ms": (last_audio,),
        "interrupt.silence_ms": (silence_stamp,),
        "interrupt.response_ms": (_arrival(replay, response_frame),),
    }
    kept, set_apart = validity.split(metrics, judge.reasons(INTERRUPT_FIGURES, judge.late(lateness), stamps))
    return {
        "index": index,
        "step": u.step,
        "name": u.name,
        "file": u.file,
        "success": success,
        "missed": response is None,
        "metrics": kept,
        "set_apart": set_apart,
        "validity": validity.validity_of(set_apart),
        "anchor_lateness_ms": None if lateness is None else lateness / MS,
        "t_bi_ns": t_bi,
        "t_be_ns": t_be,
        "window_end_ns": window_end,
        "anchor_window_end_ns": anchor_end,
        "clear_ns": clear,
        "last_audio_ns": last_audio,
        "silent_ns": silent,
        "response_ns": response,
    }


def _false_barge_ins(
    replay: _Replay, utterances: list[_Utterance], timeline: Timeline, chunks: _Chunks
) -> list[dict[str, Any]]:
    """The clears no scripted cause explains (`call.false_barge_in_count`, docs/metrics.md).

    A cause is the caller's speech, from t_ss to when the agent could have heard its end (t_se, or
    the release of the chunk holding it under a network impairment), or an interrupting message at
    its send time. It explains a clear that arrives from its start to CLAIM_MS past its end and cuts
    an agent utterance already under way by that end: speech that ended before the agent's reply
    began cannot be why the reply stopped."""
    causes: list[tuple[int, int]] = []
    for u in utterances:
        heard = chunks.heard_by(u.last_sample)
        causes.append((u.t_ss, u.t_se if heard is None else max(u.t_se, heard[0])))
    for e in timeline.of_kind("msg.out"):
        m = _message(e)
        if m is not None and m.get("type") in INTERRUPTING_MESSAGES:
            causes.append((e.t_ns, e.t_ns))
    claim = CLAIM_MS * MS
    return [
        {"clear_ns": clear, "cut_from_ns": cut}
        for clear, cut in zip(replay.clears, replay.clear_cuts, strict=True)
        if not any(start <= clear <= end + claim and (cut is None or cut <= end) for start, end in causes)
    ]


def _first_event(timeline: Timeline, kind: str, after: int | None = None) -> Event | None:
    return next(
        (e for e in timeline.events if e.kind == kind and (after is None or e.t_ns >= after)),
        None,
    )


def _create(timeline: Timeline, created: Event | None) -> Event | None:
    """The `call.create_sent` of the attempt that succeeded."""
    if created is None:
        return None
    sent = [e for e in timeline.of_kind("call.create_sent") if e.t_ns <= created.t_ns]
    answered = [
        e
        for e in timeline.of_kind("call.create_answered")
        if e.t_ns <= created.t_ns and 200 <= (_int(e.data.get("status")) or 0) < 300
    ]
    if answered:
        attempt = answered[-1].data.get("attempt")
        match = [e for e in sent if e.data.get("attempt") == attempt]
        if match:
            return match[-1]
    return sent[-1] if sent else None


def _pings(timeline: Timeline, replay: _Replay) -> list[float]:
    sent: dict[float, int] = {}
    for e in timeline.events:
        if e.kind != "msg.out":
            continue
        m = _message(e)
        if m is None or m.get("type") != "ping":
            continue
        stamp = _number(m.get("timestamp"))
        if stamp is not None:
            sent.setdefault(stamp, e.t_ns)
    rtts = []
    for t, stamp in replay.pongs:
        t_sent = sent.pop(stamp, None)
        if t_sent is not None and t >= t_sent:
            rtts.append((t - t_sent) / MS)
    return rtts


def _outcome(
    timeline: Timeline,
    config: _Config,
    metrics: dict[str, Value],
    created: Event | None,
    ws_open: Event | None,
    turns: list[dict[str, Any]],
    set_apart_detail: str | None,
) -> tuple[str, str | None]:
    stopped = timeline.first("call.interrupted")
    if stopped is not None:  # the run stopped the call: its figures are those measured so far
        return "interrupted", stopped.data.get("message")
    drift, chunk = metrics["pacer.drift_ms"], config.chunk_ms
    if chunk is not None and isinstance(drift, float) and abs(drift) > chunk:
        return "invalid:generator_overloaded", f"pacer drift {drift:.3f} ms > one chunk"
    if created is None:
        # The create's own words (what refused it, or why the API was not reached) when the
        # timeline has them; a bare status is all an older timeline can say.
        failure = next((e for e in timeline.of_kind("error") if e.data.get("where") == "create"), None)
        if failure is not None and failure.data.get("message"):
            return "failed:create", f"the call was never created: {failure.data['message']}"
        answers = timeline.of_kind("call.create_answered")
        status = answers[-1].data.get("status") if answers else None
        return "failed:create", f"the call was never created (last status {status})"
    error = timeline.first("error")
    dropped = next(
        (
            c
            for c in timeline.of_kind("ws.closed")
            if c.data.get("by") == "server" and _int(c.data.get("code")) not in OK_CLOSE_CODES
        ),
        None,
    )
    # The server closing (or dropping) the socket is the cause of the script's error it makes ("the
    # socket closed during step N", stamped as the step saw it, which may be before the close is):
    # the outcome names the close, and the step it cut.
    if dropped is not None and (
        error is None or error.data.get("reason") == "closed_by_server" or error.t_ns >= dropped.t_ns
    ):
        code, reason = _int(dropped.data.get("code")), dropped.data.get("reason")
        if code == 1006:  # no close frame: the TCP connection ended under the socket
            detail = "the server dropped the connection (1006, no close frame)"
        else:
            detail = f"closed by the server: {code}" + (f" {reason}" if reason else "")
        if error is not None:
            detail += f" ({error.data.get('where')})"
        return "failed:server_close", detail
    if error is not None and error.data.get("where") == "join" and ws_open is None:
        return "failed:connect", f"the websocket never opened: {error.data.get('message')}"
    if error is not None:
        return "failed:error", f"{error.data.get('where')}: {error.data.get('message')}"
    if ws_open is None:
        return "failed:connect", "the websocket never opened"
    # Every timed figure set apart: the call says nothing of the agent's timing. A failure above is
    # not a timing (a socket the server dropped stays its fault however late the client was).
    if set_apart_detail is not None:
        return "invalid:generator_overloaded", set_apart_detail
    missed = [t["index"] for t in turns if t["missed"]]
    if missed:
        return "failed:missed_turn", f"no reply heard to turn(s) {missed}"
    return expectation_failed(e.data for e in timeline.of_kind("expect.checked")) or ("completed", None)


def expectation_failed(checks: Iterable[dict[str, Any]]) -> tuple[str, str] | None:
    """("failed:expect", detail) for the first check that did not hold (`Checked.to_json()`
    shapes, the data of `expect.checked` events); None when all held. A call that failed or is
    invalid for another reason keeps that reason (`_outcome` asks this last)."""
    failed = [d for d in checks if d.get("ok") is False]
    if not failed:
        return None
    more = f" (and {len(failed) - 1} more failed checks)" if len(failed) > 1 else ""
    return "failed:expect", describe_check(failed[0]) + more


def describe_check(d: dict[str, Any]) -> str:
    """A checked expectation (`Checked.to_json()` shape) on one line: "step 4 (ask_order): <what>:
    <detail>", with its step's name when it has one."""
    name = f" ({d['name']})" if d.get("name") else ""
    return f"step {d.get('step')}{name}: {d.get('what')}: {d.get('detail')}"


class _Indexed:
    """A timeline read through an index of its events by kind, built once: compute() asks for the
    first event or all events of a kind some fifteen times (`Timeline.first`, `Timeline.of_kind`,
    each a scan of every event). Same answers: events in timeline order."""

    def __init__(self, timeline: Timeline) -> None:
        self.events = timeline.events
        self.audio_in = timeline.audio_in
        self.audio_out = timeline.audio_out
        self.audio_out_release = timeline.audio_out_release
        self.audio_in_rows = timeline.audio_in_rows
        by_kind: dict[str, list[Event]] = {}
        for event in timeline.events:
            kind = by_kind.get(event.kind)
            if kind is None:
                by_kind[event.kind] = [event]
            else:
                kind.append(event)
        self._by_kind = by_kind

    def first(self, kind: str) -> Event | None:
        events = self._by_kind.get(kind)
        return events[0] if events else None

    def of_kind(self, kind: str) -> list[Event]:
        return list(self._by_kind.get(kind, ()))


def compute(timeline: Timeline) -> CallMetrics:
    """Every figure of docs/metrics.md for one call, from its timeline alone (its text frames still held
    raw by the pacing process parsed into `msg.in` events first: the figures read them)."""
    timeline.settle_messages()
    timeline = _Indexed(timeline)  # type: ignore[assignment]
    config, t0 = _read_config(timeline)
    replay = _replay(timeline, config)
    pb = replay.playback

    chunks = _Chunks(timeline.audio_out, timeline.audio_out_release)
    loop_event = timeline.first("loop.lag")
    loop = LoopLag.from_data(loop_event.data) if loop_event is not None else None
    tolerance = validity.tolerance_ns(config.chunk_ms)
    judge = _Judge(
        chunks=chunks,
        loop=loop,
        tolerance=tolerance,
        # No stamp is more uncertain than the period plus the largest lag: when that is within the
        # tolerance, the loop sets nothing apart and no stamp needs looking up.
        lags=(
            validity.LagIndex(loop)
            if loop is not None and tolerance is not None and loop.period_ns + loop.max_lag_ns > tolerance
            else None
        ),
    )

    utterances = _utterances(timeline, config, t0)
    turns: list[dict[str, Any]] = []
    barge_ins: list[dict[str, Any]] = []
    for k, u in enumerate(utterances):
        window_end = utterances[k + 1].t_ss if k + 1 < len(utterances) else None
        if u.kind == "say":
            turns.append(_turn(replay, u, len(turns), window_end, judge))
        else:
            barge_ins.append(_barge_in(replay, u, len(barge_ins), window_end, judge))

    created = timeline.first("call.created")
    create_sent = _create(timeline, created)
    connect = timeline.first("ws.connect_started")
    ws_open = timeline.first("ws.open")
    ws_closed = _first_event(timeline, "ws.closed", ws_open.t_ns) if ws_open is not None else None
    open_ns = ws_open.t_ns if ws_open is not None else None
    call_started = _first_in(replay.call_started, open_ns, None) if open_ns is not None else None
    first_audible = pb.first_audible_at_or_after(open_ns) if open_ns is not None else None
    fetched = timeline.first("call.fetched")
    end_reason = fetched.data.get("end_reason") if fetched is not None else None
    rtts = _pings(timeline, replay)

    lateness = chunks.lateness_ms()
    network_delay = chunks.network_delay_ms()
    stopped = timeline.first("pacer.stopped")
    drift = _number(stopped.data.get("drift_ms")) if stopped is not None else None

    judged = [b["success"] for b in barge_ins if b["success"] is not None]
    false_barge_ins = _false_barge_ins(replay, utterances, timeline, chunks)
    metrics: dict[str, Value] = {
        "call.create_ms": _ms(create_sent.t_ns if create_sent else None, created.t_ns if created else None),
        "call.join_ms": _ms(connect.t_ns if connect else None, open_ns),
        "call.started_ms": _ms(open_ns, call_started),
        "call.first_audio_ms": _ms(open_ns, first_audible),
        "call.ping_rtt_ms": sum(rtts) / len(rtts) if rtts else None,
        "call.duration_ms": _ms(open_ns, ws_closed.t_ns if ws_closed else None),
        "call.max_buffered_ms": pb.max_buffered_ms,
        "call.underflow_count": len(pb.underflows),
        "call.underflow_ms": pb.underflow_ms,
        "call.false_barge_in_count": len(false_barge_ins) if open_ns is not None else None,
        "call.network_delay_p50_ms": None if network_delay is None else _percentile(network_delay, 50),
        "call.network_delay_max_ms": None if not network_delay else network_delay[-1],
        "call.agent_audio_ms": pb.audible_ns_between(0) / MS,
        "call.malformed_count": len(timeline.of_kind("msg.in_invalid")),
        "call.end_reason": end_reason if isinstance(end_reason, str) else None,
        "call.outcome": "completed",
        "pacer.lateness_p50_ms": _percentile(lateness, 50),
        "pacer.lateness_p99_ms": _percentile(lateness, 99),
        "pacer.lateness_max_ms": lateness[-1] if lateness else None,
        "pacer.drift_ms": drift,
        "pacer.loop_lag_max_ms": None if loop is None else loop.max_lag_ns / MS,
        "interrupt.success_pct": 100 * sum(judged) / len(judged) if judged else None,
    }
    greeting_frame = _frame_heard_from(replay, first_audible)
    stamps = {
        "call.create_ms": (create_sent.t_ns if create_sent else None, created.t_ns if created else None),
        "call.join_ms": (connect.t_ns if connect else None, open_ns),
        "call.started_ms": (open_ns, call_started),
        "call.first_audio_ms": (open_ns, _arrival(replay, greeting_frame)),
    }
    metrics, set_apart = validity.split(metrics, judge.reasons(CALL_FIGURES, False, stamps))
    # The anchored items: each turn (a missed one stands: its verdict is not a latency), each
    # barge-in, and the greeting when there was one: agent audio heard before the first scripted
    # utterance ended (later, the first audio heard is a reply).
    items = [
        None if t["missed"] else validity.item_set_apart(t["metrics"], t["set_apart"], TURN_FIGURES)
        for t in turns
    ] + [validity.item_set_apart(b["metrics"], b["set_apart"], INTERRUPT_FIGURES) for b in barge_ins]
    if first_audible is not None and (not utterances or first_audible < utterances[0].t_se):
        items.append(validity.item_set_apart(metrics, set_apart, ("call.first_audio_ms",)))
    whole = validity.call_set_apart_detail(items)
    outcome, detail = _outcome(timeline, config, metrics, created, ws_open, turns, whole)
    metrics["call.outcome"] = outcome
    return CallMetrics(
        set_apart=set_apart,
        metrics=metrics,
        turns=turns,
        barge_ins=barge_ins,
        underflows=[
            {
                "start_ns": u.start_ns,
                "end_ns": u.end_ns,
                "ms": u.ms,
                **({"open_at_end": True} if u.open_at_end else {}),
            }
            for u in pb.underflows
        ],
        outcome=outcome,
        outcome_detail=detail,
        ping_rtts_ms=rtts,
        false_barge_ins=false_barge_ins if open_ns is not None else [],
        anchors={
            "t0_ns": t0,
            "create_sent_ns": create_sent.t_ns if create_sent else None,
            "created_ns": created.t_ns if created else None,
            "ws_connect_started_ns": connect.t_ns if connect else None,
            "ws_open_ns": open_ns,
            "call_started_ns": call_started,
            "first_audible_ns": first_audible,
            "ws_closed_ns": ws_closed.t_ns if ws_closed else None,
            "playback_end_ns": pb.end_ns,
        },
    )


def playback(timeline: Timeline) -> Playback:
    """The listener's playback of the call's agent audio (what the recording's right channel is)."""
    config, _ = _read_config(timeline)
    return _replay(timeline, config).playback
