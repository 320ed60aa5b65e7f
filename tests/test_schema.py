"""Tests for uvbench.protocol.schema: create-call request validation and response checking."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from uvbench.protocol.schema import (
    START_AGENT_CALL_REQUEST,
    RequestValidationError,
    load_openapi,
    validate_response,
    validate_start_call,
)

CALL_ID = "c474c5be-242d-4f4b-9bd2-0c5c1a6f1e8e"
DURATION_HINT = 'expected seconds with an \'s\' suffix, e.g. "30s" or "0.384s".'


def ws_body(**fields: Any) -> dict:
    """A minimal valid serverWebSocket create-call body plus `fields`."""
    return {"systemPrompt": "You are a test agent.", **ws_medium(), **fields}


def ws_medium(**websocket: Any) -> dict:
    return {"medium": {"serverWebSocket": {"inputSampleRate": 16000, **websocket}}}


def client_tool(name: str = "getSecretMenu", **fields: Any) -> dict:
    return {"temporaryTool": {"modelToolName": name, "description": "d", "client": {}, **fields}}


def errors_of(body: Any, **kwargs: Any) -> dict:
    with pytest.raises(RequestValidationError) as info:
        validate_start_call(body, **kwargs)
    return info.value.errors


# --------------------------------------------------------------------------------------------
# Loading


def test_load_openapi_is_cached_and_is_the_official_schema() -> None:
    spec = load_openapi()
    assert spec is load_openapi()
    assert spec["openapi"] == "3.0.3"
    schemas = spec["components"]["schemas"]
    assert "ultravox.v1.StartCallRequest" in schemas
    assert START_AGENT_CALL_REQUEST in schemas


# --------------------------------------------------------------------------------------------
# Valid bodies and normalization


def test_minimal_body_passes_and_is_a_copy() -> None:
    body = ws_body()
    out = validate_start_call(body)
    assert out == body
    assert out is not body
    assert out["medium"] is not body["medium"]


def test_empty_body_passes() -> None:
    # Every StartCallRequest field is optional in the schema (medium defaults to WebRTC).
    assert validate_start_call({}) == {}


def test_snake_case_field_names_are_normalized_to_camel_case() -> None:
    # As sent by the official form-filler example.
    body = {
        "system_prompt": "p",
        "medium": {"serverWebSocket": {"input_sample_rate": 16000, "client_buffer_size_ms": 60}},
        "selected_tools": [{"temporary_tool": {"model_tool_name": "t", "client": {}}}],
    }
    assert validate_start_call(body) == {
        "systemPrompt": "p",
        "medium": {"serverWebSocket": {"inputSampleRate": 16000, "clientBufferSizeMs": 60}},
        "selectedTools": [{"temporaryTool": {"modelToolName": "t", "client": {}}}],
    }


def test_snake_case_keys_inside_free_form_maps_are_left_alone() -> None:
    body = ws_body(
        metadata={"user_id": "42"},
        experimental_settings={"some_flag": True},
        initialState={"order_items": []},
    )
    out = validate_start_call(body)
    assert out["metadata"] == {"user_id": "42"}
    assert out["experimentalSettings"] == {"some_flag": True}
    assert out["initialState"] == {"order_items": []}


def test_both_snake_and_camel_forms_is_an_error() -> None:
    body = {"medium": {"serverWebSocket": {"inputSampleRate": 16000, "input_sample_rate": 8000}}}
    assert errors_of(body) == {
        "medium": {
            "serverWebSocket": {
                "inputSampleRate": ['Field given twice, as "inputSampleRate" and "input_sample_rate".']
            }
        }
    }


def test_null_fields_mean_not_set_and_are_dropped() -> None:
    # Pipecat sends these as null when not configured.
    out = validate_start_call(ws_body(systemPrompt=None, model=None, voice=None))
    assert out == ws_medium()


def test_integers_as_strings_or_whole_floats_are_normalized() -> None:
    out = validate_start_call(
        {"medium": {"serverWebSocket": {"inputSampleRate": "16000", "outputSampleRate": 24000.0}}}
    )
    assert out["medium"]["serverWebSocket"] == {"inputSampleRate": 16000, "outputSampleRate": 24000}


# --------------------------------------------------------------------------------------------
# Schema-level errors


@pytest.mark.parametrize(
    ("body", "kind"),
    [([1, 2], "list"), ("text", "str"), (None, "NoneType")],
)
def test_body_must_be_an_object(body: Any, kind: str) -> None:
    assert errors_of(body) == {"non_field_errors": [f"Invalid data. Expected a dictionary, but got {kind}."]}


def test_unknown_fields_are_errors_at_every_level() -> None:
    body = ws_body(
        promptSystem="x",
        medium={"serverWebSocket": {"inputSampleRate": 16000, "bufferMs": 5}},
        selectedTools=[client_tool(color="red")],
        firstSpeakerSettings={"agent": {"uninterruptible": True, "loud": True}},
    )
    assert errors_of(body) == {
        "promptSystem": ["Unknown field."],
        "medium": {"serverWebSocket": {"bufferMs": ["Unknown field."]}},
        "selectedTools": {"0": {"temporaryTool": {"color": ["Unknown field."]}}},
        "firstSpeakerSettings": {"agent": {"loud": ["Unknown field."]}},
    }


def test_unknown_field_in_an_empty_message_is_an_error() -> None:
    # BaseClientToolDetails has `properties: {}`: client tools take no settings.
    body = ws_body(selectedTools=[client_tool(client={"url": "x"})])
    assert errors_of(body) == {
        "selectedTools": {"0": {"temporaryTool": {"client": {"url": ["Unknown field."]}}}}
    }


def test_free_form_objects_accept_any_keys() -> None:
    tool = client_tool(
        dynamicParameters=[
            {
                "name": "city",
                "location": "PARAMETER_LOCATION_BODY",
                "schema": {"type": "string", "anything": {"goes": 1}},
                "required": True,
            }
        ]
    )
    body = ws_body(
        experimentalSettings={"whatever": {"nested": [1, 2]}},
        initialState={"any": "thing"},
        selectedTools=[tool | {"parameterOverrides": {"x": None, "y": [1, {"z": 2}]}}],
    )
    assert validate_start_call(body)["selectedTools"][0]["parameterOverrides"] == {
        "x": None,
        "y": [1, {"z": 2}],
    }


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"systemPrompt": 5}, {"systemPrompt": ["Not a valid string."]}),
        ({"recordingEnabled": "yes"}, {"recordingEnabled": ["Must be a valid boolean."]}),
        ({"temperature": "warm"}, {"temperature": ["A valid number is required."]}),
        ({"temperature": True}, {"temperature": ["A valid number is required."]}),
        (
            {"firstSpeaker": "FIRST_SPEAKER_BOT"},
            {"firstSpeaker": ['"FIRST_SPEAKER_BOT" is not a valid choice.']},
        ),
        (
            {"selectedTools": {"toolName": "x"}},
            {"selectedTools": ['Expected a list of items but got type "dict".']},
        ),
        (
            {"vadSettings": "fast"},
            {"vadSettings": ['Expected a dictionary of items but got type "str".']},
        ),
        (
            {"metadata": ["a"]},
            {"metadata": ['Expected a dictionary of items but got type "list".']},
        ),
        (
            {"initialMessages": [None]},
            {"initialMessages": {"0": ["This field may not be null."]}},
        ),
    ],
)
def test_type_and_enum_errors(fields: dict, expected: dict) -> None:
    assert errors_of(ws_body(**fields)) == expected


def test_integer_type_and_int32_range() -> None:
    body = {
        "medium": {
            "serverWebSocket": {
                "inputSampleRate": 16000.5,
                "outputSampleRate": True,
                "clientBufferSizeMs": 2**31,
            }
        }
    }
    assert errors_of(body) == {
        "medium": {
            "serverWebSocket": {
                "inputSampleRate": ["A valid integer is required."],
                "outputSampleRate": ["A valid integer is required."],
                "clientBufferSizeMs": ["Ensure this value is less than or equal to 2147483647."],
            }
        }
    }


@pytest.mark.parametrize("value", ["245.5 seconds", "30", "1m", "01s", "1.1234567890s"])
def test_duration_pattern(value: str) -> None:
    assert errors_of(ws_body(maxDuration=value)) == {
        "maxDuration": [f'"{value}" is not a duration: {DURATION_HINT}']
    }


@pytest.mark.parametrize("value", ["30s", "0.384s", "3600.000000s", "0s"])
def test_valid_durations(value: str) -> None:
    assert validate_start_call(ws_body(joinTimeout=value))["joinTimeout"] == value


# --------------------------------------------------------------------------------------------
# Semantic rules


@pytest.mark.parametrize(
    ("temperature", "message"),
    [
        (1.5, "Ensure this value is less than or equal to 1."),
        (-0.1, "Ensure this value is greater than or equal to 0."),
    ],
)
def test_temperature_range(temperature: float, message: str) -> None:
    assert errors_of(ws_body(temperature=temperature)) == {"temperature": [message]}


@pytest.mark.parametrize("temperature", [0, 0.0, 0.8, 1])
def test_temperature_in_range(temperature: float) -> None:
    assert validate_start_call(ws_body(temperature=temperature))["temperature"] == temperature


def test_medium_must_have_exactly_one_key() -> None:
    two = {"medium": {"serverWebSocket": {"inputSampleRate": 16000}, "webRtc": {}}}
    assert errors_of(two) == {"medium": ["Exactly one medium must be set."]}
    assert errors_of({"medium": {}}) == {"medium": ["Exactly one medium must be set."]}


def test_medium_with_only_an_unknown_key_reports_just_the_unknown_key() -> None:
    assert errors_of({"medium": {"websocket": {}}}) == {"medium": {"websocket": ["Unknown field."]}}


def test_whole_object_and_field_errors_share_a_node_via_non_field_errors() -> None:
    body = {"medium": {"serverWebSocket": {}, "webRtc": {}}}
    assert errors_of(body) == {
        "medium": {
            "serverWebSocket": {"inputSampleRate": ["This field is required."]},
            "non_field_errors": ["Exactly one medium must be set."],
        }
    }


def test_input_sample_rate_is_required() -> None:
    body = {"medium": {"serverWebSocket": {"outputSampleRate": 24000}}}
    assert errors_of(body) == {
        "medium": {"serverWebSocket": {"inputSampleRate": ["This field is required."]}}
    }


@pytest.mark.parametrize("field", ["inputSampleRate", "outputSampleRate"])
@pytest.mark.parametrize("rate", [0, -16000, 7999, 48001, 96000])
def test_sample_rates_must_be_in_the_supported_range(field: str, rate: int) -> None:
    body = {"medium": {"serverWebSocket": {"inputSampleRate": 16000, field: rate}}}
    assert errors_of(body) == {
        "medium": {
            "serverWebSocket": {
                field: [
                    "Ensure this sample rate is between 8000 and 48000 Hz (the range this server supports)."
                ]
            }
        }
    }


@pytest.mark.parametrize("rate", [8000, 16000, 24000, 44100, 48000])
def test_supported_sample_rates(rate: int) -> None:
    validate_start_call(ws_medium() | {"medium": {"serverWebSocket": {"inputSampleRate": rate}}})


def test_client_buffer_size_must_not_be_negative() -> None:
    assert errors_of(ws_body(**ws_medium(clientBufferSizeMs=-1))) == {
        "medium": {
            "serverWebSocket": {"clientBufferSizeMs": ["Ensure this value is greater than or equal to 0."]}
        }
    }
    validate_start_call(ws_body(**ws_medium(clientBufferSizeMs=0)))


def test_voice_and_external_voice_are_exclusive() -> None:
    body = ws_body(voice="Mark", externalVoice={"elevenLabs": {"voiceId": "abc"}})
    assert errors_of(body) == {"externalVoice": ["Either voice or externalVoice may be set, but not both."]}


def test_external_voice_needs_exactly_one_provider() -> None:
    body = ws_body(externalVoice={"elevenLabs": {"voiceId": "a"}, "cartesia": {"voiceId": "b"}})
    assert errors_of(body) == {"externalVoice": ["Exactly one voice provider must be set."]}


def test_voice_overrides_need_voice() -> None:
    body = ws_body(voiceOverrides={"elevenLabs": {"speed": 1.1}})
    assert errors_of(body) == {"voiceOverrides": ["voiceOverrides is only valid when voice is set."]}
    validate_start_call(body | {"voice": "Mark"})


def test_first_speaker_must_agree_with_first_speaker_settings() -> None:
    body = ws_body(firstSpeaker="FIRST_SPEAKER_USER", firstSpeakerSettings={"agent": {}})
    assert errors_of(body) == {
        "firstSpeaker": [
            "firstSpeaker FIRST_SPEAKER_USER does not match firstSpeakerSettings (agent);"
            " if both are set they must match."
        ]
    }
    validate_start_call(body | {"firstSpeakerSettings": {"user": {}}})
    validate_start_call(body | {"firstSpeaker": "FIRST_SPEAKER_UNSPECIFIED"})


@pytest.mark.parametrize("settings", [{}, {"agent": {}, "user": {}}])
def test_first_speaker_settings_needs_exactly_one_of_agent_or_user(settings: dict) -> None:
    assert errors_of(ws_body(firstSpeakerSettings=settings)) == {
        "firstSpeakerSettings": ["Exactly one of agent or user must be set."]
    }


@pytest.mark.parametrize("tool", [{}, {"toolId": "a", "toolName": "b"}, {"toolName": "b", **client_tool()}])
def test_selected_tool_needs_exactly_one_reference(tool: dict) -> None:
    assert errors_of(ws_body(selectedTools=[client_tool("ok"), tool])) == {
        "selectedTools": {"1": ["Exactly one of toolId, toolName or temporaryTool must be set."]}
    }


def test_selected_tool_name_override_pattern() -> None:
    body = ws_body(selectedTools=[{"toolName": "hangUp", "nameOverride": "hang up"}])
    assert errors_of(body) == {
        "selectedTools": {"0": {"nameOverride": ["Must match ^[a-zA-Z0-9_-]{1,64}$."]}}
    }


@pytest.mark.parametrize(
    "implementations",
    [{}, {"client": {}, "http": {"baseUrlPattern": "https://x", "httpMethod": "GET"}}],
)
def test_temporary_tool_needs_exactly_one_implementation(implementations: dict) -> None:
    tool = {"temporaryTool": {"modelToolName": "t", **implementations}}
    assert errors_of(ws_body(selectedTools=[tool])) == {
        "selectedTools": {
            "0": {
                "temporaryTool": ["Exactly one implementation (http, client or dataConnection) must be set."]
            }
        }
    }


@pytest.mark.parametrize("name", ["get secret menu", "", "x" * 65, "menü"])
def test_temporary_tool_model_tool_name_pattern(name: str) -> None:
    assert errors_of(ws_body(selectedTools=[client_tool(name)])) == {
        "selectedTools": {"0": {"temporaryTool": {"modelToolName": ["Must match ^[a-zA-Z0-9_-]{1,64}$."]}}}
    }


def test_temporary_tool_model_tool_name_is_required() -> None:
    tool = {"temporaryTool": {"description": "d", "client": {}}}
    assert errors_of(ws_body(selectedTools=[tool])) == {
        "selectedTools": {"0": {"temporaryTool": {"modelToolName": ["This field is required."]}}}
    }


def test_temporary_tool_names_must_be_unique() -> None:
    body = ws_body(selectedTools=[client_tool("a"), client_tool("b"), client_tool("a")])
    assert errors_of(body) == {
        "selectedTools": {"2": ['Tool names must be unique within a call: "a" is also used by tool 0.']}
    }


def test_tool_timeout_is_a_duration_of_at_most_40s() -> None:
    assert errors_of(ws_body(selectedTools=[client_tool(timeout="41s")])) == {
        "selectedTools": {
            "0": {"temporaryTool": {"timeout": ["Ensure this duration is less than or equal to 40s."]}}
        }
    }
    assert errors_of(ws_body(selectedTools=[client_tool(timeout="2.5")])) == {
        "selectedTools": {"0": {"temporaryTool": {"timeout": [f'"2.5" is not a duration: {DURATION_HINT}']}}}
    }
    validate_start_call(ws_body(selectedTools=[client_tool(timeout="40s")]))


def test_metadata_values_must_be_strings_and_keys_not_reserved() -> None:
    body = ws_body(metadata={"ok": "1", "count": 3, "ultravox.source": "x"})
    assert errors_of(body) == {
        "metadata": {
            "count": ["Not a valid string."],
            "ultravox.source": [
                'Keys may not start with "ultravox." (reserved for system-provided metadata).'
            ],
        }
    }


def test_metadata_values_may_not_be_null() -> None:
    assert errors_of(ws_body(metadata={"k": None})) == {"metadata": {"k": ["This field may not be null."]}}


def test_vad_settings_durations_must_parse_and_not_be_negative() -> None:
    body = ws_body(
        vadSettings={
            "turnEndpointDelay": "384ms",
            "minimumTurnDuration": "-0.1s",
            "minimumInterruptionDuration": "0.09s",
        }
    )
    assert errors_of(body) == {
        "vadSettings": {
            "turnEndpointDelay": [f'"384ms" is not a duration: {DURATION_HINT}'],
            "minimumTurnDuration": ["Ensure this duration is greater than or equal to 0s."],
        }
    }


@pytest.mark.parametrize(
    ("threshold", "message"),
    [
        (0.05, "Ensure this value is greater than or equal to 0.1."),
        (1.2, "Ensure this value is less than or equal to 1."),
    ],
)
def test_vad_frame_activation_threshold_range(threshold: float, message: str) -> None:
    assert errors_of(ws_body(vadSettings={"frameActivationThreshold": threshold})) == {
        "vadSettings": {"frameActivationThreshold": [message]}
    }


def test_prior_call_id_excludes_initial_messages() -> None:
    body = ws_body(initialMessages=[{"role": "MESSAGE_ROLE_USER", "text": "My name is Steve"}])
    assert errors_of(body, prior_call_id=CALL_ID) == {
        "initialMessages": ["initialMessages may not be set together with priorCallId."]
    }
    validate_start_call(body)
    # proto3 cannot tell [] from absent, so an empty list is fine with a prior call.
    validate_start_call(ws_body(initialMessages=[]), prior_call_id=CALL_ID)


def test_all_errors_are_collected() -> None:
    body = {
        "systemPrompt": ["not", "a", "string"],
        "temperature": 3,
        "maxDuration": "1h",
        "medium": {"serverWebSocket": {"outputSampleRate": 96000}},
        "selectedTools": [{"toolId": "a", "toolName": "b"}, client_tool("bad name")],
        "metadata": {"ultravox.x": "y"},
        "bogus": 1,
    }
    errors = errors_of(body)
    assert errors == {
        "systemPrompt": ["Not a valid string."],
        "maxDuration": [f'"1h" is not a duration: {DURATION_HINT}'],
        "medium": {
            "serverWebSocket": {
                "outputSampleRate": [
                    "Ensure this sample rate is between 8000 and 48000 Hz (the range this server supports)."
                ],
                "inputSampleRate": ["This field is required."],
            }
        },
        "selectedTools": {
            "0": ["Exactly one of toolId, toolName or temporaryTool must be set."],
            "1": {"temporaryTool": {"modelToolName": ["Must match ^[a-zA-Z0-9_-]{1,64}$."]}},
        },
        "bogus": ["Unknown field."],
        "temperature": ["Ensure this value is less than or equal to 1."],
        "metadata": {
            "ultravox.x": ['Keys may not start with "ultravox." (reserved for system-provided metadata).']
        },
    }


def test_error_str_is_one_line_summary() -> None:
    with pytest.raises(RequestValidationError) as info:
        validate_start_call({"temperature": 2, "medium": {"serverWebSocket": {}}})
    text = str(info.value)
    assert "\n" not in text
    assert text == (
        "invalid request (2 errors): "
        "medium.serverWebSocket.inputSampleRate: This field is required.; "
        "temperature: Ensure this value is less than or equal to 1."
    )
    assert info.value.lines() == [
        "medium.serverWebSocket.inputSampleRate: This field is required.",
        "temperature: Ensure this value is less than or equal to 1.",
    ]


def test_unknown_schema_name_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="no schema named"):
        validate_start_call({}, schema_name="ultravox.v1.NoSuchRequest")


# --------------------------------------------------------------------------------------------
# Bodies real clients send (Pipecat's and LiveKit's Ultravox plugins)


def test_livekit_body_passes() -> None:
    # livekit-plugins-ultravox: deprecated firstSpeaker, 16k in / 24k out, 30 s buffer.
    body = {
        "systemPrompt": "You are a helpful assistant.",
        "model": "fixie-ai/ultravox",
        "voice": "Mark",
        "medium": {
            "serverWebSocket": {
                "inputSampleRate": 16000,
                "outputSampleRate": 24000,
                "clientBufferSizeMs": 30000,
            }
        },
        "selectedTools": [
            {
                "temporaryTool": {
                    "modelToolName": "get_weather",
                    "description": "Look up the weather.",
                    "dynamicParameters": [
                        {
                            "name": "location",
                            "location": "PARAMETER_LOCATION_BODY",
                            "schema": {"type": "string", "description": "City"},
                            "required": True,
                        }
                    ],
                    "client": {},
                }
            },
            # A raw function tool without a description sends null.
            {"temporaryTool": {"modelToolName": "hang_up", "description": None, "client": {}}},
        ],
        "temperature": 0.4,
        "languageHint": "en",
        "maxDuration": "1800s",
        "timeExceededMessage": "Time is up, goodbye.",
        "firstSpeaker": "FIRST_SPEAKER_USER",
    }
    out = validate_start_call(body)
    assert out["selectedTools"][1] == {"temporaryTool": {"modelToolName": "hang_up", "client": {}}}


def test_livekit_body_with_external_voice_passes() -> None:
    body = {
        "systemPrompt": "p",
        "model": "fixie-ai/ultravox",
        "externalVoice": {"elevenLabs": {"voiceId": "21m00Tcm4TlvDq8ikWAM", "speed": 1.0}},
        "medium": {
            "serverWebSocket": {
                "inputSampleRate": 16000,
                "outputSampleRate": 24000,
                "clientBufferSizeMs": 30000,
            }
        },
        "selectedTools": [],
        "firstSpeaker": "FIRST_SPEAKER_USER",
    }
    validate_start_call(body)


def pipecat_one_shot_body() -> dict:
    return {
        "systemPrompt": None,
        "temperature": 0.0,
        "model": None,
        "voice": "5c0e3f0e-8a4b-4c53-9b1e-6f2f3a2b1c0d",
        "metadata": {"session": "abc"},
        "maxDuration": "3600.000000s",
        "selectedTools": [
            {
                "temporaryTool": {
                    "modelToolName": "get_current_weather",
                    "description": "Get the current weather",
                    "dynamicParameters": [
                        {
                            "name": "location",
                            "location": "PARAMETER_LOCATION_BODY",
                            "schema": {"type": "string", "description": "The city"},
                            "required": True,
                        },
                        {
                            "name": "format",
                            "location": "PARAMETER_LOCATION_BODY",
                            "schema": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                            "required": False,
                        },
                    ],
                    "client": {},
                }
            }
        ],
        "medium": {"serverWebSocket": {"inputSampleRate": 48000}},
        "initialOutputMedium": "MESSAGE_MEDIUM_VOICE",
    }


def test_pipecat_one_shot_body_passes() -> None:
    out = validate_start_call(pipecat_one_shot_body())
    assert "systemPrompt" not in out and "model" not in out
    assert out["voice"] == "5c0e3f0e-8a4b-4c53-9b1e-6f2f3a2b1c0d"
    assert out["maxDuration"] == "3600.000000s"
    assert out["medium"] == {"serverWebSocket": {"inputSampleRate": 48000}}


def test_pipecat_agent_body_passes() -> None:
    body = {
        "templateContext": {"customer_name": "Ada"},
        "metadata": {},
        "medium": {"serverWebSocket": {"inputSampleRate": 48000}},
        "initialOutputMedium": "MESSAGE_MEDIUM_TEXT",
        "maxDuration": "600.000000s",
    }
    assert validate_start_call(body, schema_name=START_AGENT_CALL_REQUEST) == body


def test_agent_call_schema_is_used_for_agent_calls() -> None:
    # systemPrompt belongs to the agent's template, not to an agent call.
    body = {"systemPrompt": "x", "medium": {"serverWebSocket": {"inputSampleRate": 8000}}}
    assert errors_of(body, schema_name=START_AGENT_CALL_REQUEST) == {"systemPrompt": ["Unknown field."]}
    tool_overrides = {"removeAll": True, "remove": ["a"], "add": [{"toolId": "x", "toolName": "y"}]}
    assert errors_of({"toolOverrides": tool_overrides}, schema_name=START_AGENT_CALL_REQUEST) == {
        "toolOverrides": {
            "remove": ["remove may not be set together with removeAll."],
            "add": {"0": ["Exactly one of toolId, toolName or temporaryTool must be set."]},
        }
    }


def test_official_example_client_body_passes() -> None:
    # ultravox-websocket-example-client with every optional flag set.
    body = {
        "systemPrompt": "You are a drive-thru order taker.",
        "temperature": 0.8,
        "medium": {
            "serverWebSocket": {
                "inputSampleRate": 48000,
                "outputSampleRate": 48000,
                "clientBufferSizeMs": 30000,
            }
        },
        "voice": "Mark",
        "selectedTools": [
            {
                "temporaryTool": {
                    "modelToolName": "getSecretMenu",
                    "description": "Looks up today's secret menu items.",
                    "client": {},
                }
            }
        ],
        "initialOutputMedium": "MESSAGE_MEDIUM_TEXT",
        "firstSpeaker": "FIRST_SPEAKER_USER",
    }
    assert validate_start_call(body) == body


def test_form_filler_example_snake_case_medium_passes() -> None:
    body = {
        "systemPrompt": "Fill the form.",
        "medium": {"serverWebSocket": {"input_sample_rate": 16000}},
        "initialMessages": [{"role": "MESSAGE_ROLE_USER", "text": "Hi"}],
    }
    out = validate_start_call(body)
    assert out["medium"] == {"serverWebSocket": {"inputSampleRate": 16000}}


def test_full_featured_body_passes() -> None:
    body = ws_body(
        temperature=0.2,
        model="ultravox-v0.7",
        languageHint="en-US",
        joinTimeout="30s",
        maxDuration="300s",
        timeExceededMessage="Bye",
        inactivityMessages=[
            {"duration": "30s", "message": "Still there?"},
            {"duration": "15s", "message": "Bye", "endBehavior": "END_BEHAVIOR_HANG_UP_SOFT"},
        ],
        recordingEnabled=False,
        firstSpeakerSettings={
            "user": {"fallback": {"delay": "5s", "text": "Hello?"}},
        },
        initialOutputMedium="MESSAGE_MEDIUM_VOICE",
        vadSettings={
            "turnEndpointDelay": "0.384s",
            "minimumTurnDuration": "0s",
            "minimumInterruptionDuration": "0.09s",
            "frameActivationThreshold": 0.1,
        },
        metadata={"run": "42"},
        callbacks={"ended": {"url": "https://example.com/ended", "secrets": ["s"]}},
        retentionPolicy="CALL_RETENTION_POLICY_RETAIN",
        sharedSecrets=["secret"],
        selectedTools=[
            {"toolName": "hangUp"},
            {
                "temporaryTool": {
                    "modelToolName": "lookup",
                    "http": {"baseUrlPattern": "https://example.com/{id}", "httpMethod": "GET"},
                    "timeout": "10s",
                    "defaultReaction": "AGENT_REACTION_SPEAKS",
                    "staticParameters": [{"name": "k", "location": "PARAMETER_LOCATION_QUERY", "value": 1}],
                    "automaticParameters": [
                        {
                            "name": "call",
                            "location": "PARAMETER_LOCATION_HEADER",
                            "knownValue": "KNOWN_PARAM_CALL_ID",
                        }
                    ],
                }
            },
        ],
    )
    body["medium"]["serverWebSocket"].update(
        outputSampleRate=24000,
        clientBufferSizeMs=30000,
        mediaIdleTimeout="30s",
        dataMessages={"playbackClearBuffer": True, "debug": False},
    )
    assert validate_start_call(body) == body


# --------------------------------------------------------------------------------------------
# Responses


def call_object() -> dict:
    """A Call as Ultravox documents it for a fresh serverWebSocket call."""
    return {
        "callId": CALL_ID,
        "clientVersion": None,
        "created": "2026-07-01T12:00:00.000000Z",
        "joined": None,
        "ended": None,
        "endReason": None,
        "billedDuration": None,
        "billedSideInputTokens": None,
        "billedSideOutputTokens": None,
        "billingStatus": "BILLING_STATUS_PENDING",
        "firstSpeaker": "FIRST_SPEAKER_AGENT",
        "firstSpeakerSettings": {"agent": {}},
        "initialOutputMedium": "MESSAGE_MEDIUM_VOICE",
        "joinTimeout": "30s",
        "joinUrl": f"wss://voice.ultravox.ai/calls/{CALL_ID}/server_web_socket",
        "languageHint": None,
        "maxDuration": "3600s",
        "medium": {
            "serverWebSocket": {
                "inputSampleRate": 16000,
                "outputSampleRate": 16000,
                "clientBufferSizeMs": 30000,
            }
        },
        "model": "ultravox-v0.7",
        "recordingEnabled": False,
        "systemPrompt": "You are a test agent.",
        "temperature": 0.0,
        "timeExceededMessage": None,
        "voice": "Mark",
        "transcriptOptional": True,
        "vadSettings": None,
        "shortSummary": None,
        "summary": None,
        "agent": None,
        "agentId": None,
        "experimentalSettings": None,
        "metadata": {},
        "initialState": {},
        "requestContext": None,
        "sipDetails": None,
    }


def test_validate_response_accepts_a_well_formed_call() -> None:
    assert validate_response(call_object(), "Call") == []


def test_validate_response_accepts_an_ended_call_with_an_agent() -> None:
    call = call_object() | {
        "joined": "2026-07-01T12:00:01Z",
        "ended": "2026-07-01T12:01:00.5+00:00",
        "endReason": "hangup",
        "billedDuration": "59s",
        "billingStatus": "BILLING_STATUS_BILLED",
        "agent": {"agentId": CALL_ID, "name": "Support"},
        "agentId": CALL_ID,
        "sipDetails": {"billedDuration": None, "terminationReason": None},
        "extraKeyFromTheFuture": {"allowed": True},
    }
    assert validate_response(call, "Call") == []


def test_validate_response_reports_a_missing_required_key() -> None:
    call = call_object()
    del call["joinUrl"]
    assert validate_response(call, "Call") == ["$: 'joinUrl' is a required property"]


def test_validate_response_reports_wrong_types_and_formats() -> None:
    call = call_object() | {
        "billedSideInputTokens": "12",
        "callId": "not-a-uuid",
        "created": "yesterday",
        "endReason": "exploded",
        "medium": {"serverWebSocket": {"inputSampleRate": "16000"}},
    }
    errors = validate_response(call, "Call")
    assert sorted(errors) == sorted(
        [
            "$.billedSideInputTokens: '12' is not of type 'integer', 'null'",
            "$.callId: 'not-a-uuid' is not a 'uuid'",
            "$.created: 'yesterday' is not a 'date-time'",
            "$.endReason: 'exploded' is not one of ['unjoined', 'hangup', 'agent_hangup',"
            " 'timeout', 'connection_error', 'system_error']",
            "$.medium.serverWebSocket.inputSampleRate: '16000' is not of type 'integer'",
        ]
    )


def test_validate_response_non_nullable_field() -> None:
    errors = validate_response(call_object() | {"billingStatus": None}, "Call")
    assert "$.billingStatus: None is not of type 'string'" in errors


def test_validate_response_paginated_lists() -> None:
    page = {"next": None, "previous": None, "results": [call_object()], "total": 1}
    assert validate_response(page, "PaginatedCallList") == []
    broken = copy.deepcopy(page)
    del broken["results"][0]["created"]
    assert validate_response(broken, "PaginatedCallList") == [
        "$.results[0]: 'created' is a required property"
    ]
    messages = {"results": [{"role": "MESSAGE_ROLE_AGENT", "text": "Hi", "medium": "MESSAGE_MEDIUM_VOICE"}]}
    assert validate_response(messages, "Paginatedultravox.v1.MessageList") == []
    assert validate_response({"next": None}, "Paginatedultravox.v1.MessageList") == [
        "$: 'results' is a required property"
    ]


def test_validate_response_events_and_concurrency() -> None:
    event = {
        "callId": CALL_ID,
        "callStageId": CALL_ID,
        "callTimestamp": "1.5s",
        "severity": "warning",
        "type": "audio_underflow",
        "text": "Audio underflow",
        "extras": None,
        "wallClockTimestamp": None,
    }
    assert validate_response(event, "CallEvent") == []
    assert validate_response({"results": [event]}, "PaginatedCallEventList") == []
    assert validate_response(event | {"severity": "fatal"}, "CallEvent") == [
        "$.severity: 'fatal' is not one of ['debug', 'info', 'warning', 'error']"
    ]
    bucket = {
        "timestamp": "2026-07-01T12:00:00Z",
        "maxTotalCalls": 3,
        "maxJoinedCalls": 2,
        "avgTotalCalls": 1.5,
        "avgJoinedCalls": 1,
    }
    assert validate_response({"timeSeries": [bucket]}, "ConcurrencyResponse") == []
    assert validate_response({"timeSeries": [bucket | {"maxTotalCalls": 1.5}]}, "ConcurrencyResponse") == [
        "$.timeSeries[0].maxTotalCalls: 1.5 is not of type 'integer'"
    ]


def test_validate_response_unknown_schema_name() -> None:
    with pytest.raises(ValueError, match="no schema named"):
        validate_response({}, "NoSuchThing")
