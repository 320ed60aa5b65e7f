"""JSON as uvbench reads it: non-finite numbers and deep nesting refused with a reason."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from uvbench.protocol.strict_json import MAX_DEPTH, JsonRefused, loads, nesting_exceeds


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"timestamp": NaN}', "NaN is not a JSON value"),
        ('{"timestamp": Infinity}', "Infinity is not a JSON value"),
        ('{"timestamp": -Infinity}', "-Infinity is not a JSON value"),
        ('{"timestamp": 1e999}', "1e999 is out of range"),
        ("[" * 100_000 + "]" * 100_000, f"nested more than {MAX_DEPTH} levels deep"),  # RecursionError
        ('{"a":' * (MAX_DEPTH + 1) + "1" + "}" * (MAX_DEPTH + 1), f"nested more than {MAX_DEPTH}"),
    ],
)
def test_what_is_not_json_or_too_deep_is_refused_with_its_reason(text, reason):
    with pytest.raises(JsonRefused, match=reason):
        loads(text)


def test_json_up_to_the_bound_reads_as_json_does():
    text = '{"a":' * MAX_DEPTH + "[1.5, -2, 1e300]" + "}" * MAX_DEPTH  # the list is one level deeper
    with pytest.raises(JsonRefused):
        loads(text)
    text = '{"a":' * (MAX_DEPTH - 1) + "[1.5, -2, 1e300]" + "}" * (MAX_DEPTH - 1)
    assert loads(text) == json.loads(text)
    assert loads(b'{"type": "ping", "timestamp": 1732380000.123456789}') == {
        "type": "ping",
        "timestamp": 1732380000.123456789,
    }
    with pytest.raises(json.JSONDecodeError):
        loads("{not json")
    with pytest.raises(ValueError, match="digits"):
        loads("1" + "0" * 5000)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=30,
)


def depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0


@given(json_values, st.integers(0, 6))
def test_nesting_is_measured_as_the_plain_definition(value, limit):
    assert nesting_exceeds(value, limit) == (depth(value) > limit)
    assert loads(json.dumps(value)) == value
