"""Validation against the vendored official OpenAPI schema (openapi.yaml).

Two directions, with different semantics on purpose:

* Requests (`validate_start_call`): the create-call bodies are protobuf messages parsed by a
  protobuf JSON parser on the real server, so they are checked the way such a parser does it:
  unknown fields are errors, snake_case field names are accepted, `null` means "not set". On
  top of the schema come the rules that only the schema *descriptions* state ("exactly one
  medium", "at most 40s", ...). Errors come back as a DRF-style body, all of them at once.

* Responses (`validate_response`): DRF serializer output, checked with OpenAPI 3.0 semantics
  and unknown keys allowed, so tests can hold every response of the local server against the
  official schema.
"""

from __future__ import annotations

import copy
import functools
import importlib.resources
import math
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

import jsonschema
import yaml
from jsonschema.exceptions import ValidationError as _JsonSchemaError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from uvbench.protocol.durations import DURATION_PATTERN

START_CALL_REQUEST = "ultravox.v1.StartCallRequest"  # POST /api/calls
START_AGENT_CALL_REQUEST = "ultravox.v1.StartAgentCallRequest"  # POST /api/agents/{id}/calls

# Sample rates this server accepts for serverWebSocket audio (the real service does not
# document a range; these cover every rate the known clients use: 8k telephony to 48k).
MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 48000
# "timeout ... max 40 s" for tools (DOCS tools/async-tools.mdx).
MAX_TOOL_TIMEOUT_SECONDS = 40.0
TOOL_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
# The request schema leaves languageHint unbounded, but the Call (and CallStage) that keeps it
# allows at most this many characters, so a longer hint cannot be stored.
MAX_LANGUAGE_HINT_CHARS = 16
RESERVED_METADATA_PREFIX = "ultravox."

_INT_RANGES = {
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}
_INTEGER_STRING = re.compile(r"^-?[0-9]+$")
# A proto field name as written in the .proto file (what snake_case clients send).
_PROTO_FIELD_NAME = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)+$")
_SCHEMAS_POINTER = "#/components/schemas/"

ErrorPath = tuple[str, ...]


# --------------------------------------------------------------------------------------------
# Loading


@functools.cache
def load_openapi() -> dict:
    """The vendored official OpenAPI document, parsed once. Callers must not mutate it."""
    text = importlib.resources.files("uvbench.protocol").joinpath("openapi.yaml").read_text("utf-8")
    # The C loader is ~10x faster on this 260 KB file; fall back when libyaml is missing.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(text, Loader=loader)


def _component_schemas() -> dict[str, dict]:
    return load_openapi()["components"]["schemas"]


def _component(name: str) -> dict:
    schemas = _component_schemas()
    if name not in schemas:
        raise ValueError(f"no schema named {name!r} in openapi.yaml components")
    return schemas[name]


# --------------------------------------------------------------------------------------------
# Errors


class RequestValidationError(Exception):
    """A request body failed validation.

    `errors` is a DRF-style error body, ready to send with a 400: `{"field": ["message"]}`,
    nested dicts for nested objects, list items keyed by their index as a string ("0"), and
    `non_field_errors` for problems of an object as a whole.
    """

    def __init__(self, errors: dict) -> None:
        self.errors = errors
        super().__init__(errors)

    def lines(self) -> list[str]:
        """One "dotted.path: message" string per error."""
        return [f"{'.'.join(path)}: {msg}" if path else msg for path, msg in _flatten(self.errors)]

    def __str__(self) -> str:
        lines = self.lines()
        noun = "error" if len(lines) == 1 else "errors"
        return f"invalid request ({len(lines)} {noun}): " + "; ".join(lines)


def _flatten(errors: dict, prefix: ErrorPath = ()) -> Iterator[tuple[ErrorPath, str]]:
    for key, value in errors.items():
        # Whole-object messages are reported at the object's own path.
        path = prefix if key == "non_field_errors" else prefix + (key,)
        if isinstance(value, dict):
            yield from _flatten(value, path)
        else:
            for message in value:
                yield path, message


class _ErrorTree:
    """Accumulates messages into the nested DRF error shape."""

    def __init__(self) -> None:
        self.root: dict[str, Any] = {}

    def add(self, path: ErrorPath, message: str) -> None:
        if not path:
            path = ("non_field_errors",)
        node = self.root
        for key in path[:-1]:
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            elif isinstance(child, list):
                # Messages already recorded for this object as a whole: keep them, as DRF does,
                # under non_field_errors next to the per-field ones.
                child = node[key] = {"non_field_errors": child}
            node = child
        leaf = path[-1]
        existing = node.get(leaf)
        if isinstance(existing, dict):
            existing = existing.setdefault("non_field_errors", [])
        elif existing is None:
            existing = node[leaf] = []
        if message not in existing:
            existing.append(message)

    def has(self, path: ErrorPath) -> bool:
        """Whether any error was recorded at or below `path`."""
        node: Any = self.root
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return False
            node = node[key]
        return bool(node)


# --------------------------------------------------------------------------------------------
# DRF-style messages (rest_framework.fields wording, so clients see familiar texts)

MSG_REQUIRED = "This field is required."
MSG_NULL = "This field may not be null."
MSG_UNKNOWN = "Unknown field."
MSG_STRING = "Not a valid string."
MSG_INTEGER = "A valid integer is required."
MSG_NUMBER = "A valid number is required."
MSG_BOOLEAN = "Must be a valid boolean."
MSG_PATTERN = "This value does not match the required pattern."
MSG_ONE_MEDIUM = "Exactly one medium must be set."
MSG_PRIOR_CALL = "initialMessages may not be set together with priorCallId."


def _msg_max(limit: float) -> str:
    return f"Ensure this value is less than or equal to {limit}."


def _msg_min(limit: float) -> str:
    return f"Ensure this value is greater than or equal to {limit}."


def _msg_choice(value: Any) -> str:
    return f'"{value}" is not a valid choice.'


def _msg_dict(value: Any) -> str:
    return f'Expected a dictionary of items but got type "{type(value).__name__}".'


def _msg_list(value: Any) -> str:
    return f'Expected a list of items but got type "{type(value).__name__}".'


def _msg_duration(value: str) -> str:
    return f'"{value}" is not a duration: expected seconds with an \'s\' suffix, e.g. "30s" or "0.384s".'


def _msg_exactly_one(names: Iterable[str]) -> str:
    names = list(names)
    return f"Exactly one of {', '.join(names[:-1])} or {names[-1]} must be set."


# --------------------------------------------------------------------------------------------
# Request validation: a walker over the proto-derived component schemas


def _snake_to_camel(name: str) -> str:
    # protobuf's json_name rule: drop each "_" and upper-case the character after it.
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _duration_seconds(value: Any) -> float | None:
    """Seconds in a valid duration string, else None (the format error is reported elsewhere)."""
    if isinstance(value, str) and DURATION_PATTERN.match(value):
        return float(value[:-1])
    return None


class _RequestWalker:
    """Checks a JSON value against a proto-derived schema, returning a normalized copy.

    Invalid values are reported and passed through unchanged, so that the semantic rules that
    run afterwards see what the client sent (they type-check before judging) and do not repeat
    "This field is required." for a field that is present but malformed.
    """

    def __init__(self, errors: _ErrorTree) -> None:
        self.errors = errors

    def resolve(self, schema: dict) -> tuple[dict, str | None]:
        """Follow `$ref` and drf-spectacular's `allOf: [{$ref}]` wrappers.

        Returns the effective schema and the name of the component it came from (the key for
        the semantic rules in _OBJECT_RULES).
        """
        name = None
        while True:
            if "$ref" in schema:
                name = schema["$ref"].removeprefix(_SCHEMAS_POINTER)
                schema = _component(name)
            elif "allOf" in schema:
                merged: dict = {}
                for part in schema["allOf"]:
                    part_schema, part_name = self.resolve(part)
                    merged.update(part_schema)
                    name = part_name or name
                # The wrapper's own keys (description, nullable, ...) apply on top.
                merged.update({k: v for k, v in schema.items() if k != "allOf"})
                schema = merged
            else:
                return schema, name

    def check(self, value: Any, schema: dict, path: ErrorPath) -> Any:
        schema, name = self.resolve(schema)
        kind = schema.get("type")
        if value is None:
            # Reached only for list items and map values: a field set to null is dropped by
            # check_message. A schema-less value (google.protobuf.Value) may be JSON null.
            if kind is None and "properties" not in schema:
                return None
            self.errors.add(path, MSG_NULL)
            return value
        if "properties" in schema:
            return self.check_message(value, schema, name, path)
        if kind == "object":
            return self.check_map(value, schema, path)
        if kind == "array":
            return self.check_array(value, schema, path)
        if kind == "string":
            return self.check_string(value, schema, path)
        if kind == "integer":
            return self.check_integer(value, schema, path)
        if kind == "number":
            return self.check_number(value, schema, path)
        if kind == "boolean":
            if not isinstance(value, bool):
                self.errors.add(path, MSG_BOOLEAN)
            return value
        # No type at all (google.protobuf.Value, bare descriptions): any JSON value.
        return copy.deepcopy(value)

    def check_message(self, value: Any, schema: dict, name: str | None, path: ErrorPath) -> Any:
        if not isinstance(value, dict):
            self.errors.add(path, _msg_dict(value))
            return value
        properties: dict = schema["properties"]
        out: dict[str, Any] = {}
        given_as: dict[str, str] = {}  # canonical name -> the key the client used
        for key, item in value.items():
            field = key
            if key not in properties:
                camel = _snake_to_camel(key) if _PROTO_FIELD_NAME.match(key) else key
                if camel not in properties:
                    # The schema declares no additionalProperties: false, but the server's
                    # protobuf parser rejects unknown fields at every level.
                    self.errors.add(path + (key,), MSG_UNKNOWN)
                    continue
                field = camel
            if field in given_as:
                self.errors.add(
                    path + (field,),
                    f'Field given twice, as "{given_as[field]}" and "{key}".',
                )
                continue
            given_as[field] = key
            if item is None:
                # protobuf JSON: null means "not set" for any field (Pipecat sends
                # "systemPrompt": null, "voice": null), so drop it.
                continue
            out[field] = self.check(item, properties[field], path + (field,))
        rule = _OBJECT_RULES.get(name or "")
        if rule is not None:
            rule(out, path, self.errors)
        return out

    def check_map(self, value: Any, schema: dict, path: ErrorPath) -> Any:
        if not isinstance(value, dict):
            self.errors.add(path, _msg_dict(value))
            return value
        value_schema = schema.get("additionalProperties")
        if not isinstance(value_schema, dict) or not value_schema:
            # Free-form object (google.protobuf.Struct: metadata on messages, initialState,
            # experimentalSettings, templateContext, tool parameter schemas): keys and values
            # are the client's business, and no snake_case renaming happens inside.
            return copy.deepcopy(value)
        # map<string, T>: keys are free, each value is checked against T.
        return {key: self.check(item, value_schema, path + (key,)) for key, item in value.items()}

    def check_array(self, value: Any, schema: dict, path: ErrorPath) -> Any:
        if not isinstance(value, list):
            self.errors.add(path, _msg_list(value))
            return value
        items = schema.get("items", {})
        out = [self.check(item, items, path + (str(i),)) for i, item in enumerate(value)]
        if "maxItems" in schema and len(out) > schema["maxItems"]:
            self.errors.add(path, f"Ensure this field has no more than {schema['maxItems']} elements.")
        if "minItems" in schema and len(out) < schema["minItems"]:
            self.errors.add(path, f"Ensure this field has at least {schema['minItems']} elements.")
        return out

    def check_string(self, value: Any, schema: dict, path: ErrorPath) -> Any:
        if not isinstance(value, str):
            self.errors.add(path, MSG_STRING)
            return value
        if "enum" in schema and value not in schema["enum"]:
            self.errors.add(path, _msg_choice(value))
        pattern = schema.get("pattern")
        if pattern == DURATION_PATTERN.pattern:
            seconds = _duration_seconds(value)
            if seconds is None:
                self.errors.add(path, _msg_duration(value))
            elif seconds < 0:
                # The pattern admits a sign, but no duration in a create-call request (timeouts,
                # delays, VAD windows, message timespans) means anything when negative.
                self.errors.add(path, "Ensure this duration is greater than or equal to 0s.")
        elif pattern is not None and not re.search(pattern, value):
            self.errors.add(path, MSG_PATTERN)
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            self.errors.add(path, f"Ensure this field has no more than {schema['maxLength']} characters.")
        if "minLength" in schema and len(value) < schema["minLength"]:
            self.errors.add(path, f"Ensure this field has at least {schema['minLength']} characters.")
        return value

    def check_integer(self, value: Any, schema: dict, path: ErrorPath) -> Any:
        # protobuf JSON accepts integers as numbers with no fraction or as decimal strings.
        if isinstance(value, bool):
            number = None
        elif isinstance(value, int):
            number = value
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        elif isinstance(value, str) and _INTEGER_STRING.match(value):
            number = int(value)
        else:
            number = None
        if number is None:
            self.errors.add(path, MSG_INTEGER)
            return value
        low, high = _INT_RANGES.get(schema.get("format", ""), (None, None))
        self.check_range(number, schema, path, low, high)
        return number

    def check_number(self, value: Any, schema: dict, path: ErrorPath) -> Any:
        number: float | None = None
        if _is_number(value):
            number = value
        elif isinstance(value, str):
            # protobuf JSON also accepts floats as strings.
            try:
                number = float(value)
            except ValueError:
                number = None
        if number is None or not math.isfinite(number):
            self.errors.add(path, MSG_NUMBER)
            return value
        self.check_range(number, schema, path, None, None)
        return number

    def check_range(
        self,
        number: float,
        schema: dict,
        path: ErrorPath,
        low: float | None,
        high: float | None,
    ) -> None:
        low = schema.get("minimum", low)
        high = schema.get("maximum", high)
        if low is not None and number < low:
            self.errors.add(path, _msg_min(low))
        if high is not None and number > high:
            self.errors.add(path, _msg_max(high))


# --------------------------------------------------------------------------------------------
# Semantic rules from the schema descriptions, keyed by component name. Each receives the
# normalized object (invalid values passed through), its path, and the error tree.

_Rule = Callable[[dict, ErrorPath, _ErrorTree], None]


def _check_exactly_one(
    obj: dict, names: tuple[str, ...], path: ErrorPath, errors: _ErrorTree, message: str
) -> None:
    present = [name for name in names if name in obj]
    if len(present) > 1 or (not present and not errors.has(path)):
        # When nothing valid is present because of an unknown key, "Unknown field." already
        # says what is wrong; a second message would only add noise.
        errors.add(path, message)


def _check_in_range(
    obj: dict, field: str, low: float, high: float, path: ErrorPath, errors: _ErrorTree
) -> None:
    value = obj.get(field)
    if not _is_number(value):
        return
    if value < low:
        errors.add(path + (field,), _msg_min(low))
    elif value > high:
        errors.add(path + (field,), _msg_max(high))


def _rule_call_medium(obj: dict, path: ErrorPath, errors: _ErrorTree) -> None:
    # "At most one call medium may be set"; an empty {} selects none, which the server
    # cannot act on either, so "exactly one" when medium is present at all.
    _check_exactly_one(
        obj, tuple(_component("ultravox.v1.CallMedium")["properties"]), path, errors, MSG_ONE_MEDIUM
    )


def _rule_websocket_medium(obj: dict, path: ErrorPath, errors: _ErrorTree) -> None:
    if "inputSampleRate" not in obj:
        errors.add(path + ("inputSampleRate",), MSG_REQUIRED)
    for field in ("inputSampleRate", "outputSampleRate"):
        rate = obj.get(field)
        if _is_int(rate) and not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
            errors.add(
                path + (field,),
                f"Ensure this sample rate is between {MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE} Hz"
                " (the range this server supports).",
            )
    buffer_ms = obj.get("clientBufferSizeMs")
    if _is_int(buffer_ms) and buffer_ms < 0:
        errors.add(path + ("clientBufferSizeMs",), _msg_min(0))


def _rule_sip_medium(obj: dict, path: ErrorPath, errors: _ErrorTree) -> None:
    _check_exactly_one(
        obj, ("incoming", "outgoing"), path, errors, _msg_exactly_one(("incoming", "outgoing"))
    )


def _rule_external_voice(obj: dict, path: ErrorPath, errors: _ErrorTree) -> None:
    providers = tuple(_component("ultravox.v1.ExternalVoice")["properties"])
    _check_exactly_one(obj, providers, path, errors, "Exactly one voice provider must be set.")


def _rule_first_speaker_settings(obj: dict, path: ErrorPath, errors: _ErrorTree) -> None:
    _check_exactly_one(obj, ("agent", "user"), path, errors, _msg_exactly_one(("agent", "user")))


_TOOL_REFS = ("toolId", "toolName", "temporaryTool")


def _rule_selected_tool(obj: dict, path: ErrorPath, errors: _ErrorTree) -> None:
    _check_exactly_one(obj, _TOOL_REFS, path, errors, _msg_exactly_one(_TOOL_REFS))
    name = obj.get("nameOverride")
    if isinstance(name, str) and not TOOL_NAME_PATTERN.match(name):
        errors.add(path + ("nameOverride",), f"Must match {TOOL_NAME_PATTERN.pattern}.")


_TOOL_IMPLEMENTATIONS = ("http", "client", "dataConnection")


def _rule_base_tool_definition(obj: dict, path: ErrorPath, errors: _ErrorTree) -> None:
    _check_exactly_one(
        obj,
        _TOOL_IMPLEMENTATIONS,
        path,
        errors,
        "Exactly one implementation (http, client or dataConnection) must be set.",
    )
    name = obj.get("modelToolName")
    if name is None:
        errors.add(path + ("modelToolName",), MSG_REQUIRED)
    elif isinstance(name, str) and not TOOL_NAME_PATTERN.match(name):
        errors.add(path + ("modelToolName",), f"Must match {TOOL_NAME_PATTERN.pattern}.")
    seconds = _duration_seconds(obj.get("timeout"))
    if seconds is not None and seconds > MAX_TOOL_TIMEOUT_SECONDS:
        errors.add(
            path + ("timeout",),
            f"Ensure this duration is less than or equal to {MAX_TOOL_TIMEOUT_SECONDS:g}s.",
        )


def _rule_vad_settings(obj: dict, path: ErrorPath, errors: _ErrorTree) -> None:
    # Durations are already required to be >= 0 for every request duration.
    _check_in_range(obj, "frameActivationThreshold", 0.1, 1, path, errors)


def _rule_tool_overrides(obj: dict, path: ErrorPath, errors: _ErrorTree) -> None:
    if obj.get("removeAll") is True and obj.get("remove"):
        errors.add(path + ("remove",), "remove may not be set together with removeAll.")


_OBJECT_RULES: dict[str, _Rule] = {
    "ultravox.v1.CallMedium": _rule_call_medium,
    "ultravox.v1.CallMedium_WebSocketMedium": _rule_websocket_medium,
    "ultravox.v1.CallMedium_SipMedium": _rule_sip_medium,
    "ultravox.v1.ExternalVoice": _rule_external_voice,
    "ultravox.v1.FirstSpeakerSettings": _rule_first_speaker_settings,
    "ultravox.v1.SelectedTool": _rule_selected_tool,
    "ultravox.v1.BaseToolDefinition": _rule_base_tool_definition,
    "ultravox.v1.VadSettings": _rule_vad_settings,
    "ultravox.v1.ToolOverrides": _rule_tool_overrides,
}

_FIRST_SPEAKER_SETTING = {"FIRST_SPEAKER_AGENT": "agent", "FIRST_SPEAKER_USER": "user"}


def _check_request_rules(out: dict, errors: _ErrorTree, prior_call_id: str | None) -> None:
    """Rules about the request as a whole (both StartCallRequest and StartAgentCallRequest)."""
    _check_in_range(out, "temperature", 0, 1, (), errors)
    hint = out.get("languageHint")
    if isinstance(hint, str) and len(hint) > MAX_LANGUAGE_HINT_CHARS:
        errors.add(
            ("languageHint",),
            f"Ensure this field has no more than {MAX_LANGUAGE_HINT_CHARS} characters"
            ' (a BCP47 language code, e.g. "en-US").',
        )

    if "voice" in out and "externalVoice" in out:
        errors.add(("externalVoice",), "Either voice or externalVoice may be set, but not both.")
    if "voiceOverrides" in out and "voice" not in out:
        errors.add(("voiceOverrides",), "voiceOverrides is only valid when voice is set.")

    first_speaker = out.get("firstSpeaker")
    settings = out.get("firstSpeakerSettings")
    wanted = _FIRST_SPEAKER_SETTING.get(first_speaker) if isinstance(first_speaker, str) else None
    if wanted and isinstance(settings, dict) and settings and wanted not in settings:
        errors.add(
            ("firstSpeaker",),
            f"firstSpeaker {first_speaker} does not match firstSpeakerSettings"
            f" ({', '.join(settings)}); if both are set they must match.",
        )

    metadata = out.get("metadata")
    if isinstance(metadata, dict):
        for key in metadata:
            if key.startswith(RESERVED_METADATA_PREFIX):
                errors.add(
                    ("metadata", key),
                    f'Keys may not start with "{RESERVED_METADATA_PREFIX}"'
                    " (reserved for system-provided metadata).",
                )

    # proto3 cannot tell an empty repeated field from an absent one, so [] is "not set".
    if prior_call_id is not None and out.get("initialMessages"):
        errors.add(("initialMessages",), MSG_PRIOR_CALL)

    tools = out.get("selectedTools")
    if isinstance(tools, list):
        _check_unique_tool_names(tools, errors)


def _check_unique_tool_names(tools: list, errors: _ErrorTree) -> None:
    # "The set of tools used within a call must have a unique set of model names." Only
    # temporary tools can be checked here: durable tools' names live on the server.
    seen: dict[str, int] = {}
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("temporaryTool"), dict):
            continue
        name = tool.get("nameOverride") or tool["temporaryTool"].get("modelToolName")
        if not isinstance(name, str):
            continue
        if name in seen:
            errors.add(
                ("selectedTools", str(index)),
                f'Tool names must be unique within a call: "{name}" is also used by tool {seen[name]}.',
            )
        else:
            seen[name] = index


def validate_start_call(
    body: Any,
    *,
    schema_name: str = START_CALL_REQUEST,
    prior_call_id: str | None = None,
) -> dict:
    """Validate a create-call JSON body; return a normalized copy or raise.

    Use `schema_name=START_AGENT_CALL_REQUEST` for POST /api/agents/{id}/calls. Pass the
    `priorCallId` query parameter as `prior_call_id`.

    The copy has every field under its camelCase name, fields set to null removed (protobuf
    JSON treats null as "not set") and integers given as strings or whole floats as ints.
    Defaults are not filled in. Raises RequestValidationError with every problem found.
    """
    schema = _component(schema_name)
    errors = _ErrorTree()
    if not isinstance(body, dict):
        errors.add((), f"Invalid data. Expected a dictionary, but got {type(body).__name__}.")
        raise RequestValidationError(errors.root)
    out = _RequestWalker(errors).check(body, schema, ())
    _check_request_rules(out, errors, prior_call_id)
    if errors.root:
        raise RequestValidationError(errors.root)
    return out


# --------------------------------------------------------------------------------------------
# Response validation: the OpenAPI 3.0 components converted to JSON Schema 2020-12

_OPENAPI_URI = "urn:uvbench:openapi"

# Places where the official schema contradicts what the real service returns. Each entry is
# (component, property) -> made nullable. Call.agent is required but not nullable in the
# schema, yet a call created without an agent can only have "agent": null (agentId, next to
# it, is nullable); Ultravox's documentation shows it as "{agentId, name} or null".
_NULLABLE_ERRATA = {("Call", "agent")}

# OpenAPI keywords with no JSON Schema meaning here (readOnly/writeOnly only matter for
# requests, and the REST tests check responses, which include readOnly fields).
_DROPPED_KEYWORDS = {
    "nullable",
    "readOnly",
    "writeOnly",
    "deprecated",
    "example",
    "discriminator",
    "xml",
    "externalDocs",
}


def _convert(schema: Any) -> Any:
    """One OpenAPI 3.0 Schema Object -> JSON Schema 2020-12."""
    if isinstance(schema, list):
        return [_convert(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROPPED_KEYWORDS:
            continue
        if key == "properties":
            out[key] = {name: _convert(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not", "allOf", "oneOf", "anyOf"):
            out[key] = _convert(value)
        elif key == "$ref":
            out[key] = _OPENAPI_URI + value
        else:
            out[key] = value
    if schema.get("nullable") is True:
        out = _make_nullable(out)
    return out


def _make_nullable(schema: dict) -> dict:
    # drf-spectacular writes `nullable: true` next to `allOf`/`oneOf` without a `type`. Read
    # strictly (OAS 3.0.3), nullable then has no effect and e.g. "vadSettings": null would be
    # invalid; its intent is clearly "this or null", which is how it is applied here.
    if isinstance(schema.get("type"), str) and "$ref" not in schema:
        nullable = {**schema, "type": [schema["type"], "null"]}
        if "enum" in nullable and None not in nullable["enum"]:
            nullable["enum"] = [*nullable["enum"], None]
        return nullable
    return {"anyOf": [{"type": "null"}, schema]}


@functools.cache
def _response_registry() -> Registry:
    schemas = {name: _convert(schema) for name, schema in _component_schemas().items()}
    for component, prop in _NULLABLE_ERRATA:
        properties = schemas[component]["properties"]
        properties[prop] = _make_nullable(properties[prop])
    document = {"components": {"schemas": schemas}}
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    return Registry().with_resource(_OPENAPI_URI, resource)


def _is_uuid(value: object) -> bool:
    if not isinstance(value, str):
        return True  # formats only constrain strings
    # The canonical hyphenated form only; uuid.UUID alone would also take braces and URNs.
    if len(value) != 36 or value[8] + value[13] + value[18] + value[23] != "----":
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})$"
)


def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True  # formats only constrain strings
    match = _RFC3339.match(value)
    if not match:
        return False
    year, month, day, hour, minute, second = map(int, match.groups())
    try:
        # RFC 3339 allows a leap second (60); datetime does not.
        datetime(year, month, day, hour, minute, min(second, 59))
    except ValueError:
        return False
    return second <= 60


def _format_checker() -> jsonschema.FormatChecker:
    # Only the formats the REST tests care about; uri/email/... stay unchecked (annotations).
    checker = jsonschema.FormatChecker(formats=())
    checker.checks("uuid")(_is_uuid)
    checker.checks("date-time")(_is_date_time)
    return checker


@functools.cache
def _response_validator(schema_name: str) -> jsonschema.protocols.Validator:
    _component(schema_name)  # a clear error for a misspelled name
    ref = f"{_OPENAPI_URI}{_SCHEMAS_POINTER}{schema_name}"
    return jsonschema.Draft202012Validator(
        {"$ref": ref}, registry=_response_registry(), format_checker=_format_checker()
    )


def _json_path(path: Iterable[Any]) -> str:
    text = "$"
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _is_null_branch(error: _JsonSchemaError) -> bool:
    """An error that only says "not null", from the null alternative of a nullable field."""
    return (error.validator == "type" and error.validator_value == "null") or (
        error.validator == "enum" and error.validator_value == [None]
    )


def _explain(error: _JsonSchemaError) -> list[_JsonSchemaError]:
    """Replace "not valid under any of the given schemas" with the errors of the real branch."""
    if error.validator not in ("anyOf", "oneOf") or not error.context:
        return [error]
    branches: dict[int, list[_JsonSchemaError]] = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    meaningful = [errs for errs in branches.values() if not all(_is_null_branch(e) for e in errs)]
    if len(meaningful) != 1:
        return [error]
    return [leaf for sub in meaningful[0] for leaf in _explain(sub)]


def validate_response(instance: Any, schema_name: str) -> list[str]:
    """Check a server response against the official schema named `schema_name`.

    OpenAPI 3.0 semantics: required keys, `nullable`, enums, uuid and date-time formats;
    readOnly is ignored and unknown keys are allowed. Returns one "$.path: message" string
    per problem; an empty list means valid.
    """
    validator = _response_validator(schema_name)
    messages: list[str] = []
    for error in validator.iter_errors(instance):
        for leaf in _explain(error):
            line = f"{_json_path(leaf.absolute_path)}: {leaf.message}"
            if line not in messages:
                messages.append(line)
    return messages
