"""JSON as uvbench reads it off the wire and from REST bodies: strict, and bounded.

Python's `json` accepts `NaN`, `Infinity` and numbers too large for a float (which become `inf`),
none of which is JSON, and a value echoed back would then be written as bare `NaN`, which no
other client can parse. It also recurses once per level of nesting, so a 2 KB text nested a
thousand levels deep raises RecursionError instead of a parse error, and a value nested a little
less deep can still exhaust the stack of whatever walks it afterwards (validation, copying).
`loads` refuses all of these with a ValueError that says which, like any other malformed text.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 64
"""Deepest nesting of arrays and objects accepted. Ultravox's messages and call bodies nest a few
levels; tool parameter schemas a few more. Far below the interpreter's recursion limit."""


class JsonRefused(ValueError):
    """Text that `json` would read but that is not JSON uvbench accepts (non-finite, too deep)."""


def _reject_constant(name: str) -> Any:
    raise JsonRefused(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonRefused(f"the number {text[:40]} is out of range for a float")
    return value


def nesting_exceeds(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether arrays and objects in `value` nest more than `limit` levels (the outermost is level
    1). Walks with its own stack, so any depth is measured without recursion."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def loads(text: str | bytes | bytearray) -> Any:
    """`json.loads`, refusing NaN, Infinity, floats out of range and nesting beyond MAX_DEPTH.

    Raises json.JSONDecodeError for malformed text, JsonRefused for the above, and ValueError for
    an integer with more digits than the interpreter converts."""
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise JsonRefused(f"nested more than {MAX_DEPTH} levels deep") from None
    if nesting_exceeds(value):
        raise JsonRefused(f"nested more than {MAX_DEPTH} levels deep")
    return value


def reason(exc: ValueError) -> str:
    """Why `loads` refused a text, in a phrase: where the syntax broke, what was refused, or the
    integer too long to convert."""
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at position {exc.pos}"
    if isinstance(exc, JsonRefused):
        return str(exc)
    return "a number has too many digits"
