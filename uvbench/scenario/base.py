"""What the scenario, load and suite models share: one-line problems, durations, the strict base model."""

from __future__ import annotations

import difflib
import json
import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, WithJsonSchema
from pydantic_core import PydanticCustomError


def problem(message: str, at: str | None = None) -> PydanticCustomError:
    """A validation error whose text is already "what is wrong (what is expected)".

    `at` names a field (dotted for nested ones) of the model being validated that the problem is
    really about (for model-level checks); the loader then points at that field's line and column.
    """
    return PydanticCustomError("uvbench", message, {"at": at} if at else None)


def show(value: Any) -> str:
    """A value as the user wrote it in YAML, for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return str(value)


def did_you_mean(word: str, candidates: list[str] | tuple[str, ...], *, quote: bool = True) -> str | None:
    """' did you mean "x"?' text for the closest candidate, or None."""
    match = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    if not match:
        return None
    return f'did you mean "{match[0]}"?' if quote else f"did you mean {match[0]}?"


JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
"""The dialect of the scenario and suite JSON Schemas (`uvbench schema`)."""


# --------------------------------------------------------------------------------------------
# Durations

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)(ms|h|m|s)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
DURATION_EXPECTED = 'expected e.g. "1.5s", "200ms", "2m" or a number of seconds'


def duration_seconds(value: Any) -> float:
    """Seconds in a scenario duration: "1.5s", "200ms", "2m", "1m30s", "1h" or a number of seconds.

    Raises ValueError with the one-line problem text.
    """
    if isinstance(value, bool):
        raise ValueError(f"{show(value)} is not a duration ({DURATION_EXPECTED})")
    if isinstance(value, int | float):
        if value != value or value in (float("inf"), float("-inf")) or value < 0:
            raise ValueError(f"{show(value)} is not a duration ({DURATION_EXPECTED}, not negative)")
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        pos, total = 0, 0.0
        for match in _DURATION_PART.finditer(text):
            if match.start() != pos:
                break
            total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            pos = match.end()
        if text and pos == len(text):
            return total
    raise ValueError(f"{show(value)} is not a duration ({DURATION_EXPECTED})")


def _duration(value: Any) -> float:
    try:
        return duration_seconds(value)
    except ValueError as exc:
        raise problem(str(exc)) from None


_DURATION_SCHEMA = {
    "anyOf": [
        {"type": "number", "minimum": 0},
        {"type": "string", "pattern": r"^\s*((\d+(\.\d+)?|\.\d+)(ms|h|m|s))+\s*$"},
        {"type": "string", "pattern": r"^\$\{[^{}]+\}$", "description": "A ${variable} holding a duration."},
    ],
}
Duration = Annotated[float, BeforeValidator(_duration), WithJsonSchema(_DURATION_SCHEMA)]
"""Seconds: a number, or a string like "1.5s", "200ms", "2m", "1m30s"."""


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
        coerce_numbers_to_str=True,
    )
