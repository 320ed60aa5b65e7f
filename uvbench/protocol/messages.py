"""Ultravox data messages (JSON text frames, as Ultravox documents them): tolerant parse, strict build.

Shared by the client (which parses server messages and builds its own) and the local server
(which parses client messages). Plain code: no sockets, no clocks.

Parsing never raises. A text frame that is not a JSON object with a string ``type``, or a known
message with a field of the wrong type or value, comes back as `InvalidMessage` with a one-line
reason; a message of a type this module does not know comes back as `Unknown`, kept as it came.
Known messages are normalised to small frozen dataclasses whatever form they arrived in: the
legacy transcripts of 2024 (§7.3, §7.6), the snake_case field names of the 2024 docs, and missing
optional fields (filled with their documented defaults). Each keeps the original dict as ``.raw``
(not part of equality), and ``to_current()`` gives the message in its current documented form,
which is what goes into a call's timeline.

Building is strict: camelCase, exactly the documented fields (those given), enums checked, so a
scenario's typo fails before it reaches the wire. ``encode`` turns a message dict into compact
JSON text.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from uvbench.protocol import strict_json

__all__ = [
    # server -> client
    "CallStarted",
    "State",
    "Transcript",
    "ClientToolInvocation",
    "PlaybackClearBuffer",
    "Pong",
    "Debug",
    "ServerMessage",
    "parse_server_message",
    # client -> server
    "Ping",
    "UserTextMessage",
    "SetOutputMedium",
    "ClientToolResult",
    "ForcedAgentMessage",
    "HangUp",
    "ClientMessage",
    "parse_client_message",
    # both
    "Unknown",
    "InvalidMessage",
    # builders
    "ping",
    "user_text_message",
    "input_text_message",
    "set_output_medium",
    "client_tool_result",
    "forced_agent_message",
    "hang_up",
    "encode",
    # enums
    "ROLES",
    "MEDIUMS",
    "STATES",
    "URGENCIES",
    "FORCED_URGENCIES",
    "RESPONSE_TYPES",
    "AGENT_REACTIONS",
    "ERROR_TYPES",
]

ROLES = ("user", "agent")
MEDIUMS = ("voice", "text")
STATES = ("idle", "listening", "thinking", "speaking")
"""The documented agent states. Parsing accepts any string (a new state is news, not an error)."""
URGENCIES = ("immediate", "soon", "later")
FORCED_URGENCIES = ("immediate", "soon")
RESPONSE_TYPES = ("tool-response", "hang-up", "new-stage", "send-to-thread")
AGENT_REACTIONS = ("speaks", "listens", "speaks-once")
ERROR_TYPES = ("undefined", "implementation-error")

MAX_ORDINAL = 2**63 - 1
"""Ordinals are counts within a call; anything beyond a signed 64-bit integer is not one."""
MAX_EXACT_INT = 2**53
"""Integers beyond this lose precision as floats (and in JavaScript clients): not a timestamp."""


# ---------------------------------------------------------------------------------------------
# Results shared by both directions


@dataclass(frozen=True)
class InvalidMessage:
    """A text frame that is not a valid data message: the text as received and why."""

    text: str
    error: str


@dataclass(frozen=True)
class Unknown:
    """A well-formed message of a type this module does not model (kept, never an error)."""

    type: str
    raw: dict[str, Any] = field(hash=False)

    def to_current(self) -> dict[str, Any]:
        return dict(self.raw)


@dataclass(frozen=True)
class _Message:
    """Base of the modelled messages: ``raw`` is the dict as received (the current form when the
    object was built directly), excluded from equality so legacy and current forms compare equal."""

    TYPE: ClassVar[str]
    raw: dict[str, Any] | None = field(default=None, compare=False, repr=False, kw_only=True)

    def __post_init__(self) -> None:
        if self.raw is None:
            object.__setattr__(self, "raw", self.to_current())

    def to_current(self) -> dict[str, Any]:
        """The message in its current documented form (camelCase, ``type`` first)."""
        return {"type": self.TYPE, **self._fields()}

    def _fields(self) -> dict[str, Any]:
        return {}


# ---------------------------------------------------------------------------------------------
# Server -> client (§7.1)


@dataclass(frozen=True)
class CallStarted(_Message):
    TYPE: ClassVar[str] = "call_started"
    call_id: str

    def _fields(self) -> dict[str, Any]:
        return {"callId": self.call_id}


@dataclass(frozen=True)
class State(_Message):
    """The agent's state; documented values in `STATES`, others kept as they came."""

    TYPE: ClassVar[str] = "state"
    state: str

    def _fields(self) -> dict[str, Any]:
        return {"state": self.state}


@dataclass(frozen=True)
class Transcript(_Message):
    """A transcript update. ``text`` is the full text so far, ``delta`` the text added since the
    previous update of the same ordinal (normally exactly one of them is set; a bare final marker
    has neither). ``ordinal`` is None for legacy transcripts, which had none."""

    TYPE: ClassVar[str] = "transcript"
    role: str
    medium: str
    text: str | None
    delta: str | None
    final: bool
    ordinal: int | None = None

    def _fields(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "medium": self.medium,
            "text": self.text,
            "delta": self.delta,
            "final": self.final,
            "ordinal": self.ordinal,
        }


@dataclass(frozen=True)
class ClientToolInvocation(_Message):
    TYPE: ClassVar[str] = "client_tool_invocation"
    tool_name: str
    invocation_id: str
    parameters: dict[str, Any] = field(default_factory=dict, hash=False)

    def _fields(self) -> dict[str, Any]:
        return {"toolName": self.tool_name, "invocationId": self.invocation_id, "parameters": self.parameters}


@dataclass(frozen=True)
class PlaybackClearBuffer(_Message):
    TYPE: ClassVar[str] = "playback_clear_buffer"


@dataclass(frozen=True)
class Pong(_Message):
    """The echo of a ``ping``: ``timestamp`` is whatever the client sent (as a float)."""

    TYPE: ClassVar[str] = "pong"
    timestamp: float

    def _fields(self) -> dict[str, Any]:
        return {"timestamp": self.timestamp}


@dataclass(frozen=True)
class Debug(_Message):
    TYPE: ClassVar[str] = "debug"
    message: str

    def _fields(self) -> dict[str, Any]:
        return {"message": self.message}


ServerMessage = (
    CallStarted | State | Transcript | ClientToolInvocation | PlaybackClearBuffer | Pong | Debug | Unknown
)


# ---------------------------------------------------------------------------------------------
# Client -> server (§7.2)


@dataclass(frozen=True)
class Ping(_Message):
    TYPE: ClassVar[str] = "ping"
    timestamp: float

    def _fields(self) -> dict[str, Any]:
        return {"timestamp": self.timestamp}


@dataclass(frozen=True)
class UserTextMessage(_Message):
    """``user_text_message``, or the legacy ``input_text_message {text, deferResponse}`` (then
    ``raw["type"]`` tells which). Missing fields get the documented defaults."""

    TYPE: ClassVar[str] = "user_text_message"
    text: str
    urgency: str = "soon"
    defer_response: bool = False
    thread_id: str = "UI"

    @property
    def effective_urgency(self) -> str:
        """The urgency the server acts on: ``deferResponse`` turns "soon" into "later" (the
        legacy message's meaning), and never holds back an "immediate" message."""
        if self.defer_response and self.urgency != "immediate":
            return "later"
        return self.urgency

    def _fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"text": self.text, "urgency": self.urgency}
        if self.defer_response:
            fields["deferResponse"] = True
        fields["threadId"] = self.thread_id
        return fields


@dataclass(frozen=True)
class SetOutputMedium(_Message):
    TYPE: ClassVar[str] = "set_output_medium"
    medium: str

    def _fields(self) -> dict[str, Any]:
        return {"medium": self.medium}


@dataclass(frozen=True)
class ClientToolResult(_Message):
    """``client_tool_result``. ``result`` is a string (a non-string result on the wire is kept
    JSON-encoded); None when omitted, as on errors."""

    TYPE: ClassVar[str] = "client_tool_result"
    invocation_id: str
    result: str | None = None
    response_type: str = "tool-response"
    agent_reaction: str = "speaks"
    error_type: str | None = None
    error_message: str | None = None
    update_call_state: dict[str, Any] | None = field(default=None, hash=False)

    def _fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"invocationId": self.invocation_id}
        if self.result is not None:
            fields["result"] = self.result
        fields["responseType"] = self.response_type
        fields["agentReaction"] = self.agent_reaction
        for key, value in (
            ("errorType", self.error_type),
            ("errorMessage", self.error_message),
            ("updateCallState", self.update_call_state),
        ):
            if value is not None:
                fields[key] = value
        return fields


@dataclass(frozen=True)
class ForcedAgentMessage(_Message):
    """``forced_agent_message``. ``tool_calls`` and ``known_tool_results`` are the objects as
    sent (each checked to be a JSON object)."""

    TYPE: ClassVar[str] = "forced_agent_message"
    content: str = ""
    urgency: str = "soon"
    uninterruptible: bool = False
    tool_calls: tuple[dict[str, Any], ...] = field(default=(), hash=False)
    known_tool_results: tuple[dict[str, Any], ...] = field(default=(), hash=False)
    thread_id: str = "UI"

    def _fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "content": self.content,
            "urgency": self.urgency,
            "uninterruptible": self.uninterruptible,
        }
        if self.tool_calls:
            fields["toolCalls"] = list(self.tool_calls)
        if self.known_tool_results:
            fields["knownToolResults"] = list(self.known_tool_results)
        fields["threadId"] = self.thread_id
        return fields


@dataclass(frozen=True)
class HangUp(_Message):
    TYPE: ClassVar[str] = "hang_up"
    message: str = ""

    def _fields(self) -> dict[str, Any]:
        return {"message": self.message}


ClientMessage = (
    Ping | UserTextMessage | SetOutputMedium | ClientToolResult | ForcedAgentMessage | HangUp | Unknown
)


# ---------------------------------------------------------------------------------------------
# Parsing


class _Bad(Exception):
    """A field problem inside a known message; becomes InvalidMessage."""


_MISSING: Any = object()


class _Fields:
    """Typed reads of one message's fields. A field may go by several names (camelCase first,
    then the snake_case of the 2024 docs); JSON null counts as absent."""

    def __init__(self, message: Mapping[str, Any], where: str) -> None:
        self.message = message
        self.where = where

    def _get(self, names: tuple[str, ...]) -> tuple[str, Any]:
        for name in names:
            value = self.message.get(name)
            if value is not None:
                return name, value
        return names[0], _MISSING

    def _read(self, names: tuple[str, ...], default: Any, check: Callable[[str, Any], Any]) -> Any:
        name, value = self._get(names)
        if value is _MISSING:
            if default is _MISSING:
                raise _Bad(f'{self.where} lacks the required field "{name}"')
            return default
        return check(name, value)

    def _wrong(self, name: str, value: Any, expected: str) -> _Bad:
        shown = json.dumps(value) if isinstance(value, str | bool | int | float) else type(value).__name__
        if len(shown) > 60:
            shown = shown[:57] + "..."
        return _Bad(f'{self.where}: "{name}" must be {expected}, got {_json_type(value)} {shown}')

    def string(self, *names: str, default: Any = _MISSING, choices: tuple[str, ...] | None = None) -> Any:
        def check(name: str, value: Any) -> str:
            if not isinstance(value, str):
                raise self._wrong(name, value, "a string")
            if choices is not None and value not in choices:
                raise self._wrong(name, value, "one of " + ", ".join(choices))
            return value

        return self._read(names, default, check)

    def boolean(self, *names: str, default: Any = _MISSING) -> Any:
        def check(name: str, value: Any) -> bool:
            if not isinstance(value, bool):
                raise self._wrong(name, value, "true or false")
            return value

        return self._read(names, default, check)

    def ordinal(self, *names: str, default: Any = _MISSING) -> Any:
        def check(name: str, value: Any) -> int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise self._wrong(name, value, "a whole number")
            if not 0 <= value <= MAX_ORDINAL:
                raise self._wrong(name, value, f"between 0 and {MAX_ORDINAL}")
            return value

        return self._read(names, default, check)

    def timestamp(self, *names: str, default: Any = _MISSING) -> Any:
        def check(name: str, value: Any) -> float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self._wrong(name, value, "a number")
            if isinstance(value, int) and abs(value) > MAX_EXACT_INT:
                raise self._wrong(name, value, f"a number of magnitude at most 2**53 ({MAX_EXACT_INT})")
            if not math.isfinite(value):
                raise self._wrong(name, value, "a finite number")
            return float(value)

        return self._read(names, default, check)

    def obj(self, *names: str, default: Any = _MISSING) -> Any:
        def check(name: str, value: Any) -> dict[str, Any]:
            if not isinstance(value, dict):
                raise self._wrong(name, value, "a JSON object")
            return value

        return self._read(names, default, check)

    def objects(self, *names: str) -> tuple[dict[str, Any], ...]:
        def check(name: str, value: Any) -> tuple[dict[str, Any], ...]:
            if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
                raise self._wrong(name, value, "a list of JSON objects")
            return tuple(value)

        return self._read(names, (), check)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _load_object(text: str) -> dict[str, Any] | InvalidMessage:
    try:
        value = strict_json.loads(text)
    except ValueError as exc:
        return InvalidMessage(text, f"not valid JSON: {strict_json.reason(exc)}")
    if not isinstance(value, dict):
        return InvalidMessage(text, f"a data message must be a JSON object, got {_json_type(value)}")
    kind = value.get("type")
    if not isinstance(kind, str):
        what = "lacks" if kind is None else f"has a {_json_type(kind)} instead of"
        return InvalidMessage(text, f'the data message {what} a string "type"')
    return value


def _parse(text: Any, parsers: Mapping[str, Callable[[_Fields], Any]]) -> Any:
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("utf-8", errors="replace")
    if not isinstance(text, str):
        return InvalidMessage(
            repr(text)[:200], f"a data message is a JSON text frame, got {type(text).__name__}"
        )
    loaded = _load_object(text)
    if isinstance(loaded, InvalidMessage):
        return loaded
    kind = loaded["type"]
    parser = parsers.get(kind)
    if parser is None:
        return Unknown(kind, loaded)
    try:
        return parser(_Fields(loaded, kind))
    except _Bad as exc:
        return InvalidMessage(text, str(exc))


def _transcript(f: _Fields) -> Transcript:
    legacy = f.message.get("transcript")
    if "role" not in f.message and isinstance(legacy, dict):
        # ≤ 2024-11 user transcript: {"type": "transcript", "transcript": {text, final, medium}}
        inner = _Fields(legacy, "transcript.transcript")
        return Transcript(
            "user",
            inner.string("medium", default="voice", choices=MEDIUMS),
            inner.string("text", default=None),
            inner.string("delta", default=None),
            inner.boolean("final"),
            None,
            raw=f.message,
        )
    return Transcript(
        f.string("role", choices=ROLES),
        f.string("medium", default="voice", choices=MEDIUMS),
        f.string("text", default=None),
        f.string("delta", default=None),
        f.boolean("final"),
        f.ordinal("ordinal", default=None),
        raw=f.message,
    )


def _legacy_agent_transcript(medium: str) -> Callable[[_Fields], Transcript]:
    # ≤ 2024-11: voice_synced_transcript / agent_text_transcript {text | delta, final}
    def parse(f: _Fields) -> Transcript:
        return Transcript(
            "agent",
            medium,
            f.string("text", default=None),
            f.string("delta", default=None),
            f.boolean("final"),
            f.ordinal("ordinal", default=None),
            raw=f.message,
        )

    return parse


_SERVER_PARSERS: dict[str, Callable[[_Fields], Any]] = {
    "call_started": lambda f: CallStarted(f.string("callId", "call_id"), raw=f.message),
    "state": lambda f: State(f.string("state"), raw=f.message),
    "transcript": _transcript,
    "voice_synced_transcript": _legacy_agent_transcript("voice"),
    "agent_text_transcript": _legacy_agent_transcript("text"),
    "client_tool_invocation": lambda f: ClientToolInvocation(
        f.string("toolName", "tool_name"),
        f.string("invocationId", "invocation_id"),
        f.obj("parameters", default={}),
        raw=f.message,
    ),
    "playback_clear_buffer": lambda f: PlaybackClearBuffer(raw=f.message),
    "pong": lambda f: Pong(f.timestamp("timestamp"), raw=f.message),
    "debug": lambda f: Debug(f.string("message"), raw=f.message),
}


def parse_server_message(text: str) -> ServerMessage | InvalidMessage:
    """A server -> client data message from a websocket text frame. Never raises.

    Returns a modelled message (legacy forms normalised), `Unknown` for a well-formed message of
    any other type, or `InvalidMessage` with the reason the frame is not a valid data message.
    """
    return _parse(text, _SERVER_PARSERS)


def _user_text(f: _Fields) -> UserTextMessage:
    return UserTextMessage(
        f.string("text"),
        f.string("urgency", default="soon", choices=URGENCIES),
        f.boolean("deferResponse", "defer_response", default=False),
        f.string("threadId", "thread_id", default="UI"),
        raw=f.message,
    )


def _input_text(f: _Fields) -> UserTextMessage:
    # Legacy (replaced 2025-07): {text, deferResponse}; deferResponse means "don't answer yet".
    return UserTextMessage(
        f.string("text"),
        "soon",
        f.boolean("deferResponse", "defer_response", default=False),
        raw=f.message,
    )


def _tool_result(f: _Fields) -> ClientToolResult:
    name, result = f._get(("result",))
    if result is _MISSING:
        result = None
    elif not isinstance(result, str):
        # Documented as a string; some clients send the object itself. Keep it, encoded.
        result = json.dumps(result, separators=(",", ":"), ensure_ascii=False)
    return ClientToolResult(
        f.string("invocationId", "invocation_id"),
        result,
        f.string("responseType", "response_type", default="tool-response", choices=RESPONSE_TYPES),
        f.string("agentReaction", "agent_reaction", default="speaks", choices=AGENT_REACTIONS),
        f.string("errorType", "error_type", default=None, choices=ERROR_TYPES),
        f.string("errorMessage", "error_message", default=None),
        f.obj("updateCallState", "update_call_state", default=None),
        raw=f.message,
    )


_CLIENT_PARSERS: dict[str, Callable[[_Fields], Any]] = {
    "ping": lambda f: Ping(f.timestamp("timestamp"), raw=f.message),
    "user_text_message": _user_text,
    "input_text_message": _input_text,
    "set_output_medium": lambda f: SetOutputMedium(f.string("medium", choices=MEDIUMS), raw=f.message),
    "client_tool_result": _tool_result,
    "forced_agent_message": lambda f: ForcedAgentMessage(
        f.string("content", default=""),
        f.string("urgency", default="soon", choices=FORCED_URGENCIES),
        f.boolean("uninterruptible", default=False),
        f.objects("toolCalls", "tool_calls"),
        f.objects("knownToolResults", "known_tool_results"),
        f.string("threadId", "thread_id", default="UI"),
        raw=f.message,
    ),
    "hang_up": lambda f: HangUp(f.string("message", default=""), raw=f.message),
}


def parse_client_message(text: str) -> ClientMessage | InvalidMessage:
    """A client -> server data message from a websocket text frame (or a REST
    ``send_data_message`` body). Never raises; same conventions as `parse_server_message`.
    The legacy ``input_text_message`` becomes a `UserTextMessage`."""
    return _parse(text, _CLIENT_PARSERS)


# ---------------------------------------------------------------------------------------------
# Building (strict)


def _check_str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    return value


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def ping(timestamp: float) -> dict[str, Any]:
    """``ping``: the server echoes ``timestamp`` in a ``pong`` (any clock works; it is echoed)."""
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | float):
        raise TypeError(f"timestamp must be a number, got {type(timestamp).__name__}")
    if not math.isfinite(timestamp):
        raise ValueError(f"timestamp must be finite, got {timestamp!r}")
    return {"type": "ping", "timestamp": float(timestamp)}


def user_text_message(
    text: str, urgency: str | None = None, defer_response: bool | None = None
) -> dict[str, Any]:
    """``user_text_message``: text from the user. urgency: immediate (interrupt and answer now),
    soon (the server's default), later (no answer forced). An empty text with urgency immediate
    and defer_response True is the documented way to interrupt the agent."""
    message: dict[str, Any] = {"type": "user_text_message", "text": _check_str("text", text)}
    if urgency is not None:
        message["urgency"] = _check_choice("urgency", urgency, URGENCIES)
    if defer_response is not None:
        message["deferResponse"] = _check_bool("defer_response", defer_response)
    return message


def input_text_message(text: str, defer_response: bool | None = None) -> dict[str, Any]:
    """The legacy ``input_text_message`` (still sent by the official SDKs; prefer
    `user_text_message`)."""
    message: dict[str, Any] = {"type": "input_text_message", "text": _check_str("text", text)}
    if defer_response is not None:
        message["deferResponse"] = _check_bool("defer_response", defer_response)
    return message


def set_output_medium(medium: str) -> dict[str, Any]:
    """``set_output_medium``: "voice" or "text", from the agent's next utterance."""
    return {"type": "set_output_medium", "medium": _check_choice("medium", medium, MEDIUMS)}


def client_tool_result(
    invocation_id: str,
    result: Any = None,
    *,
    response_type: str | None = None,
    agent_reaction: str | None = None,
    error_type: str | None = None,
    error_message: str | None = None,
    update_call_state: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``client_tool_result`` answering the invocation ``invocation_id``.

    result: a string is sent as is; any other JSON value is JSON-encoded (the field is a string);
    None omits it (as on errors). Omitted options take the server's defaults (tool-response,
    speaks). Raises TypeError/ValueError for a wrong type or a value outside its enum.
    """
    message: dict[str, Any] = {"type": "client_tool_result"}
    if not _check_str("invocation_id", invocation_id):
        raise ValueError("invocation_id must not be empty")
    message["invocationId"] = invocation_id
    if result is not None:
        if not isinstance(result, str):
            try:
                result = json.dumps(result, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"result must be a string or a JSON value: {exc}") from None
        message["result"] = result
    if response_type is not None:
        message["responseType"] = _check_choice("response_type", response_type, RESPONSE_TYPES)
    if agent_reaction is not None:
        message["agentReaction"] = _check_choice("agent_reaction", agent_reaction, AGENT_REACTIONS)
    if error_type is not None:
        message["errorType"] = _check_choice("error_type", error_type, ERROR_TYPES)
    if error_message is not None:
        message["errorMessage"] = _check_str("error_message", error_message)
    if update_call_state is not None:
        if not isinstance(update_call_state, Mapping):
            raise TypeError(f"update_call_state must be a mapping, got {type(update_call_state).__name__}")
        message["updateCallState"] = dict(update_call_state)
    return message


def forced_agent_message(
    content: str, *, urgency: str | None = None, uninterruptible: bool | None = None
) -> dict[str, Any]:
    """``forced_agent_message``: make the agent say ``content``. urgency: immediate|soon."""
    message: dict[str, Any] = {"type": "forced_agent_message", "content": _check_str("content", content)}
    if urgency is not None:
        message["urgency"] = _check_choice("urgency", urgency, FORCED_URGENCIES)
    if uninterruptible is not None:
        message["uninterruptible"] = _check_bool("uninterruptible", uninterruptible)
    return message


def hang_up(message: str | None = None) -> dict[str, Any]:
    """``hang_up``: the agent says ``message`` (if any), then ends the call."""
    built: dict[str, Any] = {"type": "hang_up"}
    if message is not None:
        built["message"] = _check_str("message", message)
    return built


def encode(message: Mapping[str, Any]) -> str:
    """Compact JSON text for a data message (UTF-8 characters kept; NaN/Infinity refused)."""
    if not isinstance(message, Mapping) or not isinstance(message.get("type"), str):
        raise TypeError('a data message is a mapping with a string "type"')
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
