"""Ultravox data messages: tolerant parsing of every form a server or client may send, strict builders."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uvbench.protocol import messages as m
from uvbench.protocol.messages import (
    CallStarted,
    ClientToolInvocation,
    ClientToolResult,
    Debug,
    ForcedAgentMessage,
    HangUp,
    InvalidMessage,
    Ping,
    PlaybackClearBuffer,
    Pong,
    SetOutputMedium,
    State,
    Transcript,
    Unknown,
    UserTextMessage,
    parse_client_message,
    parse_server_message,
)


def server(message: Any) -> Any:
    return parse_server_message(json.dumps(message))


def client(message: Any) -> Any:
    return parse_client_message(json.dumps(message))


# --- server messages, current form (as Ultravox documents them) ------------------------------


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        ({"type": "call_started", "callId": "550e8400"}, CallStarted("550e8400")),
        ({"type": "state", "state": "listening"}, State("listening")),
        (
            {
                "type": "transcript",
                "role": "agent",
                "medium": "voice",
                "text": "Full transcript so far",
                "delta": None,
                "final": False,
                "ordinal": 1,
            },
            Transcript("agent", "voice", "Full transcript so far", None, False, 1),
        ),
        (
            {
                "type": "transcript",
                "role": "agent",
                "medium": "text",
                "delta": " next",
                "final": False,
                "ordinal": 3,
            },
            Transcript("agent", "text", None, " next", False, 3),
        ),
        (
            {
                "type": "transcript",
                "role": "user",
                "medium": "voice",
                "text": "Hi",
                "final": True,
                "ordinal": 0,
            },
            Transcript("user", "voice", "Hi", None, True, 0),
        ),
        (
            {
                "type": "client_tool_invocation",
                "toolName": "get_weather",
                "invocationId": "inv-1",
                "parameters": {"location": "Seattle"},
            },
            ClientToolInvocation("get_weather", "inv-1", {"location": "Seattle"}),
        ),
        ({"type": "playback_clear_buffer"}, PlaybackClearBuffer()),
        ({"type": "pong", "timestamp": 1234567890.123}, Pong(1234567890.123)),
        ({"type": "debug", "message": "Debug information here"}, Debug("Debug information here")),
    ],
)
def test_current_server_messages(wire: dict[str, Any], expected: Any):
    parsed = server(wire)
    assert parsed == expected
    assert type(parsed) is type(expected)
    assert parsed.raw == wire
    # to_current is the documented form, and parses back to the same message.
    assert parse_server_message(m.encode(parsed.to_current())) == parsed


def test_to_current_of_each_server_message():
    assert CallStarted("c").to_current() == {"type": "call_started", "callId": "c"}
    assert State("idle").to_current() == {"type": "state", "state": "idle"}
    assert Transcript("agent", "voice", None, "x", False, 2).to_current() == {
        "type": "transcript",
        "role": "agent",
        "medium": "voice",
        "text": None,
        "delta": "x",
        "final": False,
        "ordinal": 2,
    }
    assert ClientToolInvocation("t", "i", {"a": 1}).to_current() == {
        "type": "client_tool_invocation",
        "toolName": "t",
        "invocationId": "i",
        "parameters": {"a": 1},
    }
    assert PlaybackClearBuffer().to_current() == {"type": "playback_clear_buffer"}
    assert Pong(1.5).to_current() == {"type": "pong", "timestamp": 1.5}
    assert Debug("d").to_current() == {"type": "debug", "message": "d"}


def test_built_messages_have_raw_in_current_form():
    assert State("idle").raw == {"type": "state", "state": "idle"}


def test_messages_are_frozen_and_hashable_where_possible():
    state = State("idle")
    with pytest.raises(AttributeError):
        state.state = "speaking"  # type: ignore[misc]
    assert hash(state) == hash(State("idle"))
    assert hash(Transcript("user", "voice", "a", None, True, 1)) == hash(
        Transcript("user", "voice", "a", None, True, 1)
    )
    hash(ClientToolInvocation("t", "i", {"a": [1]}))  # parameters are left out of the hash


# --- defaults, legacy and snake_case forms (§7.3, §7.6) ---------------------------------------


def test_transcript_defaults():
    parsed = server({"type": "transcript", "role": "agent", "text": "Hi", "final": True})
    assert parsed == Transcript("agent", "voice", "Hi", None, True, None)
    assert parsed.to_current()["ordinal"] is None


def test_final_marker_without_text_is_kept():
    parsed = server({"type": "transcript", "role": "agent", "medium": "voice", "final": True, "ordinal": 4})
    assert parsed == Transcript("agent", "voice", None, None, True, 4)


def test_legacy_user_transcript():
    wire = {"type": "transcript", "transcript": {"text": "hello", "final": True, "medium": "voice"}}
    parsed = server(wire)
    assert parsed == Transcript("user", "voice", "hello", None, True, None)
    assert parsed.raw == wire
    assert parsed.to_current() == {
        "type": "transcript",
        "role": "user",
        "medium": "voice",
        "text": "hello",
        "delta": None,
        "final": True,
        "ordinal": None,
    }


def test_legacy_user_transcript_defaults_medium_to_voice():
    parsed = server({"type": "transcript", "transcript": {"text": "hello", "final": False}})
    assert parsed == Transcript("user", "voice", "hello", None, False, None)
    assert server(
        {"type": "transcript", "transcript": {"text": "typed", "final": True, "medium": "text"}}
    ).medium == ("text")


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        ({"type": "voice_synced_transcript", "delta": "Hi", "final": False}, ("voice", None, "Hi", False)),
        (
            {"type": "voice_synced_transcript", "text": "Hi there", "final": True},
            ("voice", "Hi there", None, True),
        ),
        (
            {"type": "agent_text_transcript", "text": "Hi there", "final": True},
            ("text", "Hi there", None, True),
        ),
        ({"type": "agent_text_transcript", "delta": " more", "final": False}, ("text", None, " more", False)),
    ],
)
def test_legacy_agent_transcripts(wire: dict[str, Any], expected: tuple[Any, ...]):
    medium, text, delta, final = expected
    parsed = server(wire)
    assert parsed == Transcript("agent", medium, text, delta, final, None)
    assert parsed.raw == wire
    assert parsed.to_current()["type"] == "transcript"


def test_snake_case_fields_of_the_2024_docs():
    parsed = server({"type": "client_tool_invocation", "tool_name": "lookup", "invocation_id": "i9"})
    assert parsed == ClientToolInvocation("lookup", "i9", {})
    assert parsed.to_current() == {
        "type": "client_tool_invocation",
        "toolName": "lookup",
        "invocationId": "i9",
        "parameters": {},
    }
    assert server({"type": "call_started", "call_id": "c1"}) == CallStarted("c1")
    # camelCase wins when both are present
    assert server({"type": "call_started", "callId": "a", "call_id": "b"}) == CallStarted("a")


def test_unknown_types_are_kept():
    for wire in (
        {"type": "user_started_speaking"},
        {"type": "call_event", "severity": "warning", "eventType": "x", "text": "y"},
        {"type": "error", "message": "bad"},
        {"type": "data_connection_tool_invocation", "toolName": "t", "invocationId": "i"},
        {"type": "thread_spawned", "threadId": "T"},
        {"type": "", "nested": {"a": [1, 2, None]}},
    ):
        parsed = server(wire)
        assert parsed == Unknown(wire["type"], wire)
        assert parsed.to_current() == wire
        assert parsed.to_current() is not parsed.raw


def test_unknown_state_values_are_kept():
    assert server({"type": "state", "state": "dreaming"}) == State("dreaming")


def test_extra_fields_are_ignored_but_kept_in_raw():
    wire = {"type": "state", "state": "speaking", "extra": 1}
    parsed = server(wire)
    assert parsed == State("speaking") and parsed.raw == wire
    assert parsed.to_current() == {"type": "state", "state": "speaking"}


# --- malformed input never raises ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "error_part"),
    [
        ("", "not valid JSON"),
        ("{this is not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object, got array"),
        ('"state"', "must be a JSON object, got string"),
        ("null", "must be a JSON object, got null"),
        ("3", "must be a JSON object, got number"),
        ("{}", 'lacks a string "type"'),
        ('{"type": null}', 'lacks a string "type"'),
        ('{"type": 7}', 'has a number instead of a string "type"'),
        ('{"type": ["state"]}', 'has a array instead of a string "type"'),
        ('{"type": "pong", "timestamp": NaN}', "NaN is not a JSON value"),
        ('{"type": "pong", "timestamp": Infinity}', "Infinity is not a JSON value"),
        ('{"type": "pong", "timestamp": 1e999}', "1e999 is out of range for a float"),
        ('{"type": "pong", "timestamp": 1' + "0" * 20 + "}", "magnitude at most 2**53"),
        ('{"type": "pong", "timestamp": 1' + "0" * 5000 + "}", "a number has too many digits"),
        ('{"type": "pong", "timestamp": "1.5"}', '"timestamp" must be a number, got string "1.5"'),
        ('{"type": "pong", "timestamp": true}', '"timestamp" must be a number, got boolean'),
        ('{"type": "pong"}', 'lacks the required field "timestamp"'),
        ('{"type": "call_started"}', 'lacks the required field "callId"'),
        ('{"type": "call_started", "callId": 5}', '"callId" must be a string'),
        ('{"type": "state", "state": 1}', '"state" must be a string'),
        ('{"type": "debug", "message": {"a": 1}}', '"message" must be a string, got object'),
        (
            '{"type": "transcript", "role": "agent", "final": "yes"}',
            '"final" must be true or false, got string "yes"',
        ),
        (
            '{"type": "transcript", "role": "agent", "final": 1}',
            '"final" must be true or false, got number 1',
        ),
        ('{"type": "transcript", "role": "agent", "text": "a"}', 'lacks the required field "final"'),
        ('{"type": "transcript", "final": true, "text": "a"}', 'lacks the required field "role"'),
        ('{"type": "transcript", "role": "robot", "final": true}', '"role" must be one of user, agent'),
        (
            '{"type": "transcript", "role": "user", "medium": "fax", "final": true}',
            '"medium" must be one of voice',
        ),
        ('{"type": "transcript", "role": "user", "text": 5, "final": true}', '"text" must be a string'),
        (
            '{"type": "transcript", "role": "user", "final": true, "ordinal": 1.5}',
            '"ordinal" must be a whole number',
        ),
        (
            '{"type": "transcript", "role": "user", "final": true, "ordinal": true}',
            '"ordinal" must be a whole number',
        ),
        (
            '{"type": "transcript", "role": "user", "final": true, "ordinal": -1}',
            '"ordinal" must be between 0',
        ),
        (
            '{"type": "transcript", "role": "user", "final": true, "ordinal": 1' + "0" * 30 + "}",
            "must be between 0",
        ),
        (
            '{"type": "transcript", "transcript": {"text": "a"}}',
            'transcript.transcript lacks the required field "final"',
        ),
        (
            '{"type": "transcript", "transcript": {"text": "a", "final": "no"}}',
            '"final" must be true or false',
        ),
        ('{"type": "voice_synced_transcript", "delta": 3, "final": false}', '"delta" must be a string'),
        ('{"type": "client_tool_invocation", "toolName": "t"}', 'lacks the required field "invocationId"'),
        (
            '{"type": "client_tool_invocation", "toolName": "t", "invocationId": "i", "parameters": [1]}',
            "JSON object",
        ),
        ("[" * 100_000 + "]" * 100_000, "nested more than 64 levels deep"),
        ("[" * 65 + "]" * 65, "nested more than 64 levels deep"),  # parses, but deeper than the bound
    ],
)
def test_malformed_server_messages(text: str, error_part: str):
    parsed = parse_server_message(text)
    assert isinstance(parsed, InvalidMessage)
    assert parsed.text == text
    assert error_part in parsed.error
    assert "\n" not in parsed.error


def test_the_error_names_the_message_type():
    parsed = parse_server_message('{"type": "transcript", "role": "agent", "final": "yes"}')
    assert parsed.error == 'transcript: "final" must be true or false, got string "yes"'


def test_non_text_frames_are_invalid_not_errors():
    assert isinstance(parse_server_message(None), InvalidMessage)  # type: ignore[arg-type]
    assert parse_server_message(b'{"type": "state", "state": "idle"}') == State("idle")  # type: ignore[arg-type]
    assert isinstance(parse_server_message(b"\xff\xfe"), InvalidMessage)  # type: ignore[arg-type]


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
SERVER_TYPES = [
    "call_started",
    "state",
    "transcript",
    "voice_synced_transcript",
    "agent_text_transcript",
    "client_tool_invocation",
    "playback_clear_buffer",
    "pong",
    "debug",
    "something_new",
]
CLIENT_TYPES = [
    "ping",
    "user_text_message",
    "input_text_message",
    "set_output_medium",
    "client_tool_result",
    "forced_agent_message",
    "hang_up",
    "spawn_thread",
]
FIELD_NAMES = [
    "callId",
    "call_id",
    "state",
    "role",
    "medium",
    "text",
    "delta",
    "final",
    "ordinal",
    "transcript",
    "toolName",
    "tool_name",
    "invocationId",
    "invocation_id",
    "parameters",
    "timestamp",
    "message",
    "urgency",
    "deferResponse",
    "threadId",
    "result",
    "responseType",
    "agentReaction",
    "errorType",
    "errorMessage",
    "updateCallState",
    "content",
    "uninterruptible",
    "toolCalls",
    "knownToolResults",
]
FIELD_VALUES = (
    JSON_VALUES
    | st.sampled_from(
        ["user", "agent", "voice", "text", "listening", "soon", "immediate", "speaks", "undefined"]
    )
    | st.dictionaries(st.sampled_from(["text", "final", "medium"]), JSON_VALUES, max_size=3)
)


def message_like(types: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects that look like messages (known type, plausible field names, arbitrary values)."""
    return st.builds(
        lambda kind, fields: {"type": kind, **fields},
        st.sampled_from(types),
        st.dictionaries(st.sampled_from(FIELD_NAMES), FIELD_VALUES, max_size=6),
    )


SERVER_RESULTS = (
    CallStarted,
    State,
    Transcript,
    ClientToolInvocation,
    PlaybackClearBuffer,
    Pong,
    Debug,
    Unknown,
)
CLIENT_RESULTS = (
    Ping,
    UserTextMessage,
    SetOutputMedium,
    ClientToolResult,
    ForcedAgentMessage,
    HangUp,
    Unknown,
)


def check_parse(parse: Any, results: tuple[type, ...], text: str) -> None:
    parsed = parse(text)
    if isinstance(parsed, InvalidMessage):
        assert parsed.error and "\n" not in parsed.error
        return
    assert isinstance(parsed, results)
    assert isinstance(parsed.raw, dict)
    # The current form is valid JSON and parses back to the same message.
    again = parse(m.encode(parsed.to_current()))
    assert again == parsed


@settings(max_examples=400)
@given(st.one_of(JSON_VALUES, message_like(SERVER_TYPES)))
def test_any_json_value_parses_without_raising(value: Any):
    text = json.dumps(value)
    check_parse(parse_server_message, SERVER_RESULTS, text)


@settings(max_examples=400)
@given(st.one_of(JSON_VALUES, message_like(CLIENT_TYPES)))
def test_any_json_value_parses_as_a_client_message_without_raising(value: Any):
    check_parse(parse_client_message, CLIENT_RESULTS, json.dumps(value))


@settings(max_examples=300)
@given(st.text(max_size=80))
def test_any_text_parses_without_raising(text: str):
    check_parse(parse_server_message, SERVER_RESULTS, text)
    check_parse(parse_client_message, CLIENT_RESULTS, text)


@given(
    role=st.sampled_from(m.ROLES),
    medium=st.sampled_from(m.MEDIUMS),
    text=st.none() | st.text(),
    final=st.booleans(),
    ordinal=st.none() | st.integers(min_value=0, max_value=m.MAX_ORDINAL),
)
def test_valid_transcripts_always_parse(
    role: str, medium: str, text: str | None, final: bool, ordinal: int | None
):
    wire = {
        "type": "transcript",
        "role": role,
        "medium": medium,
        "text": text,
        "final": final,
        "ordinal": ordinal,
    }
    assert server(wire) == Transcript(role, medium, text, None, final, ordinal)


# --- client messages (for the server side) -----------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        ({"type": "ping", "timestamp": 1234567890.123}, Ping(1234567890.123)),
        ({"type": "ping", "timestamp": 12}, Ping(12.0)),
        ({"type": "user_text_message", "text": "Hi", "urgency": "soon"}, UserTextMessage("Hi", "soon")),
        ({"type": "user_text_message", "text": "Hi"}, UserTextMessage("Hi", "soon", False, "UI")),
        (
            {"type": "user_text_message", "text": "", "urgency": "immediate", "deferResponse": True},
            UserTextMessage("", "immediate", True),
        ),
        (
            {"type": "input_text_message", "text": "legacy", "deferResponse": True},
            UserTextMessage("legacy", "soon", True),
        ),
        ({"type": "input_text_message", "text": "legacy"}, UserTextMessage("legacy")),
        ({"type": "set_output_medium", "medium": "text"}, SetOutputMedium("text")),
        (
            {
                "type": "client_tool_result",
                "invocationId": "inv",
                "result": "Tool execution result",
                "responseType": "tool-response",
                "agentReaction": "speaks",
                "errorType": None,
                "errorMessage": None,
                "updateCallState": None,
            },
            ClientToolResult("inv", "Tool execution result"),
        ),
        (
            {
                "type": "client_tool_result",
                "invocationId": "c1",
                "errorType": "undefined",
                "errorMessage": "no tool",
            },
            ClientToolResult("c1", None, error_type="undefined", error_message="no tool"),
        ),
        (
            {
                "type": "client_tool_result",
                "invocation_id": "c2",
                "result": {"a": 1},
                "response_type": "hang-up",
            },
            ClientToolResult("c2", '{"a":1}', response_type="hang-up"),
        ),
        (
            {
                "type": "forced_agent_message",
                "content": "Say this",
                "toolCalls": [{"id": "x", "name": "tool_name", "arguments": {"p": "v"}}],
                "uninterruptible": False,
                "urgency": "soon",
            },
            ForcedAgentMessage(
                "Say this", tool_calls=({"id": "x", "name": "tool_name", "arguments": {"p": "v"}},)
            ),
        ),
        ({"type": "forced_agent_message"}, ForcedAgentMessage()),
        ({"type": "hang_up", "message": "Goodbye!"}, HangUp("Goodbye!")),
        ({"type": "hang_up"}, HangUp("")),
        (
            {"type": "spawn_thread", "newThreadId": "T"},
            Unknown("spawn_thread", {"type": "spawn_thread", "newThreadId": "T"}),
        ),
    ],
)
def test_client_messages(wire: dict[str, Any], expected: Any):
    parsed = client(wire)
    assert parsed == expected
    assert type(parsed) is type(expected)
    assert parsed.raw == wire
    assert parse_client_message(m.encode(parsed.to_current())) == parsed


def test_legacy_input_text_message_keeps_its_meaning():
    deferred = client({"type": "input_text_message", "text": "x", "deferResponse": True})
    assert deferred.raw["type"] == "input_text_message"
    assert deferred.effective_urgency == "later"
    assert deferred.to_current() == {
        "type": "user_text_message",
        "text": "x",
        "urgency": "soon",
        "deferResponse": True,
        "threadId": "UI",
    }
    assert client({"type": "input_text_message", "text": "x"}).effective_urgency == "soon"
    assert client(
        {"type": "user_text_message", "text": "", "urgency": "immediate", "deferResponse": True}
    ).effective_urgency == ("immediate")


@pytest.mark.parametrize(
    ("wire", "error_part"),
    [
        ({"type": "ping"}, 'lacks the required field "timestamp"'),
        ({"type": "ping", "timestamp": "now"}, "must be a number"),
        ({"type": "user_text_message"}, 'lacks the required field "text"'),
        ({"type": "user_text_message", "text": 3}, '"text" must be a string'),
        (
            {"type": "user_text_message", "text": "a", "urgency": "now"},
            '"urgency" must be one of immediate, soon, later',
        ),
        (
            {"type": "user_text_message", "text": "a", "deferResponse": "yes"},
            '"deferResponse" must be true or false',
        ),
        ({"type": "set_output_medium", "medium": "smoke"}, '"medium" must be one of voice, text'),
        ({"type": "set_output_medium"}, 'lacks the required field "medium"'),
        ({"type": "client_tool_result", "result": "x"}, 'lacks the required field "invocationId"'),
        (
            {"type": "client_tool_result", "invocationId": "i", "responseType": "done"},
            '"responseType" must be one of',
        ),
        (
            {"type": "client_tool_result", "invocationId": "i", "agentReaction": "sings"},
            '"agentReaction" must be one of',
        ),
        (
            {"type": "client_tool_result", "invocationId": "i", "errorType": "oops"},
            '"errorType" must be one of',
        ),
        (
            {"type": "client_tool_result", "invocationId": "i", "updateCallState": "x"},
            "must be a JSON object",
        ),
        ({"type": "forced_agent_message", "urgency": "later"}, '"urgency" must be one of immediate, soon'),
        ({"type": "forced_agent_message", "toolCalls": {"name": "x"}}, "must be a list of JSON objects"),
        ({"type": "forced_agent_message", "uninterruptible": "no"}, "must be true or false"),
        ({"type": "hang_up", "message": 1}, '"message" must be a string'),
    ],
)
def test_malformed_client_messages(wire: dict[str, Any], error_part: str):
    parsed = client(wire)
    assert isinstance(parsed, InvalidMessage)
    assert error_part in parsed.error


# --- builders ---------------------------------------------------------------------------------


def test_builders_exact_output():
    assert m.ping(1234567890.123) == {"type": "ping", "timestamp": 1234567890.123}
    assert m.ping(5) == {"type": "ping", "timestamp": 5.0}
    assert m.user_text_message("Hi") == {"type": "user_text_message", "text": "Hi"}
    assert m.user_text_message("", urgency="immediate", defer_response=True) == {
        "type": "user_text_message",
        "text": "",
        "urgency": "immediate",
        "deferResponse": True,
    }
    assert m.input_text_message("legacy", defer_response=False) == {
        "type": "input_text_message",
        "text": "legacy",
        "deferResponse": False,
    }
    assert m.input_text_message("x") == {"type": "input_text_message", "text": "x"}
    assert m.set_output_medium("text") == {"type": "set_output_medium", "medium": "text"}
    assert m.client_tool_result("inv", "ok") == {
        "type": "client_tool_result",
        "invocationId": "inv",
        "result": "ok",
    }
    assert m.client_tool_result(
        "inv",
        {"temp": 21, "unit": "°C"},
        response_type="new-stage",
        agent_reaction="speaks-once",
        update_call_state={"k": [1]},
    ) == {
        "type": "client_tool_result",
        "invocationId": "inv",
        "result": '{"temp":21,"unit":"°C"}',
        "responseType": "new-stage",
        "agentReaction": "speaks-once",
        "updateCallState": {"k": [1]},
    }
    assert m.client_tool_result("c1", error_type="undefined", error_message="not registered") == {
        "type": "client_tool_result",
        "invocationId": "c1",
        "errorType": "undefined",
        "errorMessage": "not registered",
    }
    assert m.client_tool_result("c", [1, 2])["result"] == "[1,2]"
    assert m.client_tool_result("c", 3)["result"] == "3"
    assert m.forced_agent_message("Say it") == {"type": "forced_agent_message", "content": "Say it"}
    assert m.forced_agent_message("Say it", urgency="immediate", uninterruptible=True) == {
        "type": "forced_agent_message",
        "content": "Say it",
        "urgency": "immediate",
        "uninterruptible": True,
    }
    assert m.hang_up() == {"type": "hang_up"}
    assert m.hang_up("Goodbye!") == {"type": "hang_up", "message": "Goodbye!"}


def test_built_messages_parse_as_client_messages():
    assert parse_client_message(m.encode(m.ping(2.5))) == Ping(2.5)
    assert parse_client_message(m.encode(m.user_text_message("a", "later"))) == UserTextMessage("a", "later")
    assert parse_client_message(m.encode(m.client_tool_result("i", {"x": 1}, agent_reaction="listens"))) == (
        ClientToolResult("i", '{"x":1}', agent_reaction="listens")
    )
    assert parse_client_message(m.encode(m.hang_up("bye"))) == HangUp("bye")


def test_encode_is_compact_json():
    assert m.encode({"type": "ping", "timestamp": 1.5}) == '{"type":"ping","timestamp":1.5}'
    assert m.encode(m.user_text_message("café")) == '{"type":"user_text_message","text":"café"}'
    with pytest.raises(ValueError):
        m.encode({"type": "ping", "timestamp": float("nan")})
    with pytest.raises(TypeError):
        m.encode({"text": "no type"})


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: m.client_tool_result("i", response_type="done"), ValueError, "response_type must be one of"),
        (
            lambda: m.client_tool_result("i", agent_reaction="sings"),
            ValueError,
            "agent_reaction must be one of",
        ),
        (lambda: m.client_tool_result("i", error_type="oops"), ValueError, "error_type must be one of"),
        (lambda: m.client_tool_result("", "x"), ValueError, "invocation_id must not be empty"),
        (lambda: m.client_tool_result(5, "x"), TypeError, "invocation_id must be a str"),  # type: ignore[arg-type]
        (lambda: m.client_tool_result("i", {1, 2}), TypeError, "result must be a string or a JSON value"),
        (
            lambda: m.client_tool_result("i", float("nan")),
            TypeError,
            "result must be a string or a JSON value",
        ),
        (lambda: m.client_tool_result("i", error_message=3), TypeError, "error_message must be a str"),  # type: ignore[arg-type]
        (lambda: m.client_tool_result("i", update_call_state=[1]), TypeError, "update_call_state"),  # type: ignore[arg-type]
        (
            lambda: m.user_text_message("a", urgency="now"),
            ValueError,
            "urgency must be one of immediate, soon, later",
        ),
        (lambda: m.user_text_message(None), TypeError, "text must be a str"),  # type: ignore[arg-type]
        (lambda: m.user_text_message("a", defer_response="yes"), TypeError, "defer_response"),  # type: ignore[arg-type]
        (lambda: m.input_text_message(b"a"), TypeError, "text must be a str"),  # type: ignore[arg-type]
        (lambda: m.set_output_medium("Voice"), ValueError, "medium must be one of voice, text"),
        (
            lambda: m.forced_agent_message("a", urgency="later"),
            ValueError,
            "urgency must be one of immediate, soon",
        ),
        (lambda: m.forced_agent_message("a", uninterruptible=1), TypeError, "uninterruptible"),  # type: ignore[arg-type]
        (lambda: m.hang_up(3), TypeError, "message must be a str"),  # type: ignore[arg-type]
        (lambda: m.ping("now"), TypeError, "timestamp must be a number"),  # type: ignore[arg-type]
        (lambda: m.ping(True), TypeError, "timestamp must be a number"),
        (lambda: m.ping(float("inf")), ValueError, "timestamp must be finite"),
    ],
)
def test_builders_reject_bad_values(build: Any, error: type[Exception], match: str):
    with pytest.raises(error, match=match):
        build()
