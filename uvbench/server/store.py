"""What the local server remembers about calls: the REST view, messages, events, ground truth.

Plain data, no I/O: every method that changes a call takes the monotonic time (ns) it happened
at, so the REST layer, the websocket session and tests all drive it the same way.
"""

from __future__ import annotations

import copy
import datetime as dt
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from uvbench.protocol.durations import format_duration, parse_duration
from uvbench.server.config import AgentBehaviour, Faults
from uvbench.server.truth import GroundTruth, SinkTruth

DEFAULT_JOIN_TIMEOUT = "30s"
DEFAULT_MAX_DURATION = "3600s"
DEFAULT_MODEL = "ultravox-v0.7"
MAX_EVENTS = 2_000
"""Events a call keeps (its own, the client's mistakes, warnings); past it one `events_truncated`
warning, then they are counted (`events_dropped`), so a misbehaving client cannot grow the server."""
DEFAULT_VOICE = "Mark"
DEFAULT_CLIENT_BUFFER_MS = 60
SEVERITIES = ("debug", "info", "warning", "error")
MAX_AGENTS = 1_000
"""Agents one server keeps; creating another is refused (400 naming this limit) until one is deleted."""
MAX_AGENT_BYTES = 128 * 1024
"""Largest agent body (POST or PATCH) taken: with MAX_AGENTS, what agents can make the server hold
is bounded (125 MiB of JSON)."""
KEEP_ENDED_CALLS = 1_000
"""Ended calls one server keeps (the oldest ended is forgotten first; a live call never is): a
client reads a call back within seconds of its end, and a soak of thousands of calls must not grow
the server call by call. `keep_calls` in the server config, `uvbench serve --keep-calls`."""
MAX_CONCURRENCY_SAMPLES = 100_000
"""Changes of the concurrency the usage endpoint reports from (three per call); past it the older
half is dropped, so that series reaches back about 16,000 calls."""
TEMPLATE_ONLY_FIELDS = ("name", "created", "updated", "contextSchema")
"""Keys of a `CallTemplate` that describe the template itself, not the calls made from it."""


class LiveSession(Protocol):
    """The running websocket session of a joined call (session.Session or sink.SinkConnection),
    as REST's send_data_message and DELETE and the server's shutdown see it."""

    def deliver_data_message(self, message: dict[str, Any]) -> None: ...

    def end_call(self, reason: str) -> None: ...


class Clock:
    """Maps the host's monotonic clock onto wall time with one anchor taken at start."""

    def __init__(self) -> None:
        self.anchor_ns = time.monotonic_ns()
        self.anchor_wall = dt.datetime.now(dt.UTC)

    def now_ns(self) -> int:
        return time.monotonic_ns()

    def wall(self, ns: int) -> dt.datetime:
        return self.anchor_wall + dt.timedelta(microseconds=(ns - self.anchor_ns) / 1000)


def iso(ts: dt.datetime | None) -> str | None:
    if ts is None:
        return None
    return ts.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


@dataclass
class CallRecord:
    call_id: str
    request: dict[str, Any]
    """The validated create-call body, camelCase, with medium defaults filled in; for a call of an
    agent, its call template with the body over it (`agent_call_request`)."""
    created_ns: int
    created: dt.datetime
    join_url: str
    agent: AgentBehaviour
    faults: Faults
    agent_id: str | None = None
    agent_name: str | None = None
    """The stored agent's name when the call was created from it."""
    prior_call_id: str | None = None
    joined_ns: int | None = None
    joined: dt.datetime | None = None
    ended_ns: int | None = None
    ended: dt.datetime | None = None
    end_reason: str | None = None
    client_version: str | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    """Message objects (ultravox.v1.Message) of the call, initial messages first."""
    initial_message_count: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    events_dropped: int = 0
    """Events past MAX_EVENTS, counted and not kept."""
    truth: GroundTruth | SinkTruth = field(default_factory=GroundTruth)
    """SinkTruth for a call of the sink agent (agent.mode sink), GroundTruth otherwise."""
    recording_wav: bytes | None = None
    session: LiveSession | None = None
    connected: bool = False
    """A websocket is (or was) attached: a second connection is refused."""

    def __post_init__(self) -> None:
        if self.agent.mode == "sink" and isinstance(self.truth, GroundTruth):
            self.truth = SinkTruth()

    # -- derived -------------------------------------------------------------------------------
    @property
    def live(self) -> bool:
        return self.joined_ns is not None and self.ended_ns is None

    @property
    def medium(self) -> dict[str, Any]:
        return self.request.get("medium", {}).get("serverWebSocket", {})

    @property
    def input_sample_rate(self) -> int:
        return int(self.medium["inputSampleRate"])

    @property
    def output_sample_rate(self) -> int:
        return int(self.medium.get("outputSampleRate") or self.input_sample_rate)

    @property
    def client_buffer_ms(self) -> int:
        return int(self.medium.get("clientBufferSizeMs") or DEFAULT_CLIENT_BUFFER_MS)

    @property
    def join_timeout_s(self) -> float:
        return parse_duration(self.request.get("joinTimeout", DEFAULT_JOIN_TIMEOUT))

    @property
    def max_duration_s(self) -> float:
        return parse_duration(self.request.get("maxDuration", DEFAULT_MAX_DURATION))

    @property
    def recording_enabled(self) -> bool:
        return bool(self.request.get("recordingEnabled", False))

    # -- changes -------------------------------------------------------------------------------
    def add_event(
        self,
        ns: int,
        wall: dt.datetime,
        severity: str,
        type_: str,
        text: str,
        extras: dict[str, Any] | None = None,
    ) -> None:
        if len(self.events) >= MAX_EVENTS:
            self.events_dropped += 1
            if self.events_dropped > 1:
                return
            severity, type_, extras = "warning", "events_truncated", None
            text = f"This call reached this server's limit of {MAX_EVENTS} events: later ones are not kept."
        since_start = (ns - self.created_ns) / 1e9
        since_join = None if self.joined_ns is None else (ns - self.joined_ns) / 1e9
        self.events.append(
            {
                "callId": self.call_id,
                "callStageId": self.call_stage_id,
                "callTimestamp": format_duration(round(since_start, 3)),
                "wallClockTimestamp": None if since_join is None else format_duration(round(since_join, 3)),
                "severity": severity,
                "type": type_[:50],
                "text": text,
                "extras": extras,
                "_ns": ns,
                "_wall": iso(wall),
            }
        )

    @property
    def call_stage_id(self) -> str:
        # One stage per call: the stage id is derived from the call id so it is stable.
        return str(uuid.uuid5(uuid.UUID(self.call_id), "stage-0"))

    # -- REST view -----------------------------------------------------------------------------
    def billed_duration(self) -> str | None:
        if self.ended_ns is None:
            return None
        if self.joined_ns is None:
            return "0s"
        seconds = (self.ended_ns - self.joined_ns) / 1e9
        # Billing is in deciminutes (DOCS FAQ): round up to the next 6 s.
        deciminutes = -(-seconds // 6)
        return format_duration(deciminutes * 6)

    def to_api(self) -> dict[str, Any]:
        """The full `Call` object (every required key of the official schema)."""
        req = self.request
        first_speaker_settings = req.get("firstSpeakerSettings") or (
            {"user": {}} if req.get("firstSpeaker") == "FIRST_SPEAKER_USER" else {"agent": {}}
        )
        first_speaker = "FIRST_SPEAKER_USER" if "user" in first_speaker_settings else "FIRST_SPEAKER_AGENT"
        output_medium = req.get("initialOutputMedium") or "MESSAGE_MEDIUM_VOICE"
        if output_medium == "MESSAGE_MEDIUM_UNSPECIFIED":
            output_medium = "MESSAGE_MEDIUM_VOICE"
        if self.ended_ns is None:
            billing = "BILLING_STATUS_PENDING"
        elif self.joined_ns is None:
            billing = "BILLING_STATUS_FREE_ZERO_EFFECTIVE_DURATION"
        else:
            billing = "BILLING_STATUS_BILLED"
        body: dict[str, Any] = {
            "callId": self.call_id,
            "clientVersion": self.client_version,
            "created": iso(self.created),
            "joined": iso(self.joined),
            "ended": iso(self.ended),
            "endReason": self.end_reason,
            "billedDuration": self.billed_duration(),
            "billedSideInputTokens": None,
            "billedSideOutputTokens": None,
            "billingStatus": billing,
            "firstSpeaker": first_speaker,
            "firstSpeakerSettings": first_speaker_settings,
            "inactivityMessages": req.get("inactivityMessages", []),
            "initialOutputMedium": output_medium,
            "joinTimeout": req.get("joinTimeout", DEFAULT_JOIN_TIMEOUT),
            "joinUrl": self.join_url,
            "languageHint": req.get("languageHint"),
            "maxDuration": req.get("maxDuration", DEFAULT_MAX_DURATION),
            "medium": req.get("medium"),
            "model": req.get("model", DEFAULT_MODEL),
            "recordingEnabled": self.recording_enabled,
            "retentionPolicy": None,
            "systemPrompt": req.get("systemPrompt"),
            "temperature": float(req.get("temperature", 0.0)),
            "timeExceededMessage": req.get("timeExceededMessage"),
            "voice": req.get("voice", None if "externalVoice" in req else DEFAULT_VOICE),
            "transcriptOptional": req.get("transcriptOptional", True),
            "vadSettings": req.get("vadSettings"),
            "shortSummary": None,
            "summary": None,
            "agent": (
                None
                if self.agent_id is None
                else {"agentId": self.agent_id, "name": self.agent_name or "agent"}
            ),
            "agentId": self.agent_id,
            "experimentalSettings": req.get("experimentalSettings"),
            "metadata": req.get("metadata", {}),
            "initialState": req.get("initialState", {}),
            "requestContext": None,
            "sipDetails": None,
        }
        for optional in ("externalVoice", "voiceOverrides", "callbacks"):
            if optional in req:
                body[optional] = req[optional]
        if "dataConnection" in req:
            body["dataConnectionConfig"] = req["dataConnection"]
        return body


@dataclass
class AgentRecord:
    """A stored agent: a name and the call template its calls start from."""

    agent_id: str
    name: str
    call_template: dict[str, Any] | None
    """The validated `CallTemplate` (camelCase), without the server-set `created`/`updated`."""
    created: dt.datetime
    updated: dt.datetime
    created_ns: int

    def to_api(self, calls: int) -> dict[str, Any]:
        """The `Agent` object; `calls` is how many calls of it the server holds."""
        template = None
        if self.call_template is not None:
            # sharedSecrets is write-only (never returned), as on calls.
            template = {k: v for k, v in self.call_template.items() if k != "sharedSecrets"}
            template.update(created=iso(self.created), updated=iso(self.updated))
        return {
            "agentId": self.agent_id,
            "publishedRevisionId": None,
            "name": self.name,
            "created": iso(self.created),
            "callTemplate": template,
            "statistics": {"calls": calls},
        }


class AgentStore:
    """The agents of one server, at most `limit` (MAX_AGENTS)."""

    def __init__(self, limit: int = MAX_AGENTS) -> None:
        self.limit = limit
        self.agents: dict[str, AgentRecord] = {}

    @property
    def full(self) -> bool:
        return len(self.agents) >= self.limit

    def add(self, agent: AgentRecord) -> None:
        if self.full:
            raise ValueError(f"this server keeps at most {self.limit} agents")
        self.agents[agent.agent_id] = agent

    def get(self, agent_id: str) -> AgentRecord | None:
        return self.agents.get(agent_id)

    def delete(self, agent_id: str) -> None:
        self.agents.pop(agent_id, None)


class ToolOverrideError(ValueError):
    """`toolOverrides` that cannot apply to the agent's tools; `errors` is the DRF error body of
    the `toolOverrides` field."""

    def __init__(self, errors: dict[str, Any]) -> None:
        super().__init__(errors)
        self.errors = errors


def tool_name(selected: dict[str, Any]) -> str | None:
    """A selected tool's model-facing name: nameOverride, else its temporary tool's or durable
    tool's name (a tool given by id alone has none here)."""
    temporary = selected.get("temporaryTool") or {}
    return selected.get("nameOverride") or temporary.get("modelToolName") or selected.get("toolName")


def agent_call_request(template: dict[str, Any] | None, body: dict[str, Any]) -> dict[str, Any]:
    """The settings of a call of an agent: the agent's call template, with the fields of the
    (validated) `StartAgentCallRequest` replacing the template's field by field.

    A `voice` in the body replaces the template's voice of either kind (`externalVoice`) and its
    `voiceOverrides`; `toolOverrides` is applied to the template's `selectedTools` (removals
    before additions, by model-facing name) and not kept. Raises ToolOverrideError when a removal
    names no tool of the agent or an addition repeats a name the call already has.
    """
    request = {k: copy.deepcopy(v) for k, v in (template or {}).items() if k not in TEMPLATE_ONLY_FIELDS}
    overrides = {k: copy.deepcopy(v) for k, v in body.items() if k != "agentId"}  # the URL's agent wins
    tool_overrides = overrides.pop("toolOverrides", None) or {}
    if "voice" in overrides:
        request.pop("externalVoice", None)
        request.pop("voiceOverrides", None)
    request.update(overrides)

    tools = [] if tool_overrides.get("removeAll") else list(request.get("selectedTools") or [])
    errors: dict[str, Any] = {}
    names = {tool_name(t) for t in tools}
    if template is not None:
        unknown = [name for name in tool_overrides.get("remove") or [] if name not in names]
        if unknown:
            known = ", ".join(sorted(n for n in names if n)) or "none"
            errors["remove"] = [
                f'"{name}" is not a tool of this agent (its tools: {known}).' for name in unknown
            ]
    removed = set(tool_overrides.get("remove") or [])
    tools = [t for t in tools if tool_name(t) not in removed]
    names = {tool_name(t) for t in tools}
    for index, added in enumerate(tool_overrides.get("add") or []):
        name = tool_name(added)
        if name is not None and name in names:
            errors.setdefault("add", {})[str(index)] = [
                f'Tool names must be unique within a call: "{name}" is already a tool of this call; '
                "remove it first (toolOverrides.remove)."
            ]
        names.add(name)
        tools.append(added)
    if errors:
        raise ToolOverrideError(errors)
    if tools:
        request["selectedTools"] = tools
    else:
        request.pop("selectedTools", None)
    return request


@dataclass(slots=True)
class ConcurrencySample:
    ns: int
    total: int
    joined: int


class CallStore:
    """All calls of one server, in creation order, and the concurrency they made over time; and
    the agents calls are made from."""

    def __init__(self, clock: Clock | None = None, keep_ended: int = KEEP_ENDED_CALLS) -> None:
        self.clock = clock or Clock()
        self.calls: dict[str, CallRecord] = {}
        self.agents = AgentStore()
        self.keep_ended = keep_ended
        self.deleted: deque[str] = deque(maxlen=keep_ended)
        """The latest deleted calls' ids (a test's way to see a DELETE happened)."""
        self.forgotten = 0
        """Ended calls dropped to stay within `keep_ended`."""
        self._ended: deque[str] = deque()  # ids of the ended calls kept, in the order they ended
        self._live = self._joined_live = 0
        self.concurrency: list[ConcurrencySample] = [ConcurrencySample(self.clock.now_ns(), 0, 0)]

    def add(self, record: CallRecord) -> None:
        self.calls[record.call_id] = record
        self._live += 1
        self._sample(record.created_ns)

    def get(self, call_id: str) -> CallRecord | None:
        return self.calls.get(call_id)

    def delete(self, call_id: str) -> None:
        record = self.calls.pop(call_id, None)
        if record is not None and record.ended_ns is None:
            self._live -= 1
            self._joined_live -= record.joined_ns is not None
        self.deleted.append(call_id)

    def mark_joined(self, record: CallRecord, ns: int, client_version: str | None) -> None:
        if record.joined_ns is None and record.ended_ns is None and record.call_id in self.calls:
            self._joined_live += 1
        record.joined_ns = ns
        record.joined = self.clock.wall(ns)
        record.client_version = client_version
        self._sample(ns)

    def mark_ended(self, record: CallRecord, ns: int, reason: str) -> bool:
        """Ends the call once; False when it had already ended (the first reason stands)."""
        if record.ended_ns is not None:
            return False
        record.ended_ns = ns
        record.ended = self.clock.wall(ns)
        record.end_reason = reason
        if record.call_id in self.calls:
            self._live -= 1
            self._joined_live -= record.joined_ns is not None
            self._ended.append(record.call_id)
            self._forget_oldest_ended()
        self._sample(ns)
        return True

    def _forget_oldest_ended(self) -> None:
        while len(self._ended) > self.keep_ended:
            old = self.calls.get(self._ended.popleft())
            if old is not None and old.ended_ns is not None:
                del self.calls[old.call_id]
                self.forgotten += 1

    def calls_per_agent(self) -> Counter[str]:
        return Counter(call.agent_id for call in self.calls.values() if call.agent_id is not None)

    def active_counts(self) -> tuple[int, int]:
        """(calls not ended, of which joined), kept as calls change: a scan of every stored call
        at each change made a long run's creates slower and slower."""
        return self._live, self._joined_live

    def _sample(self, ns: int) -> None:
        self.concurrency.append(ConcurrencySample(ns, self._live, self._joined_live))
        if len(self.concurrency) > MAX_CONCURRENCY_SAMPLES:
            del self.concurrency[: MAX_CONCURRENCY_SAMPLES // 2]

    def concurrency_series(self, bucket_s: float, start_ns: int, end_ns: int) -> list[dict[str, Any]]:
        """ConcurrencyBucket objects from start to end: peak and time-weighted mean per bucket."""
        bucket_ns = int(bucket_s * 1e9)
        if end_ns <= start_ns or bucket_ns <= 0:
            return []
        samples = self.concurrency
        # Align buckets to whole multiples of the bucket size on the wall clock, like the API.
        start_wall = self.clock.wall(start_ns)
        epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        offset_ns = int((start_wall - epoch).total_seconds() * 1e9) % bucket_ns
        first = start_ns - offset_ns
        out = []
        index = 0
        level = samples[0]
        for b_start in range(first, end_ns, bucket_ns):
            b_end = b_start + bucket_ns
            # Advance to the level in force at b_start.
            while index + 1 < len(samples) and samples[index + 1].ns <= b_start:
                index += 1
            level = samples[index]
            max_total, max_joined = level.total, level.joined
            area_total = area_joined = 0.0
            cursor = b_start
            j = index
            while j + 1 < len(samples) and samples[j + 1].ns < b_end:
                nxt = samples[j + 1]
                span = max(0, nxt.ns - cursor)
                area_total += samples[j].total * span
                area_joined += samples[j].joined * span
                cursor = max(cursor, nxt.ns)
                j += 1
                max_total = max(max_total, nxt.total)
                max_joined = max(max_joined, nxt.joined)
            span = b_end - cursor
            area_total += samples[j].total * span
            area_joined += samples[j].joined * span
            out.append(
                {
                    "timestamp": iso(self.clock.wall(b_start)),
                    "maxTotalCalls": max_total,
                    "maxJoinedCalls": max_joined,
                    "avgTotalCalls": area_total / bucket_ns,
                    "avgJoinedCalls": area_joined / bucket_ns,
                }
            )
        return out
