"""Ultravox duration strings ("30s", "0.384s", "245.5s"), as protobuf's JSON mapping writes them."""

from __future__ import annotations

import re

DURATION_PATTERN = re.compile(r"^-?(?:0|[1-9][0-9]{0,11})(?:\.[0-9]{1,9})?s$")


class DurationError(ValueError):
    pass


def parse_duration(text: str) -> float:
    """Seconds in a duration string; raises DurationError with the expected form."""
    if not isinstance(text, str) or not DURATION_PATTERN.match(text):
        raise DurationError(
            f'{text!r} is not a duration: expected seconds with an \'s\' suffix, e.g. "30s" or "0.384s"'
        )
    return float(text[:-1])


def format_duration(seconds: float) -> str:
    """The shortest exact duration string for `seconds` (nanosecond resolution)."""
    nanos = round(seconds * 1_000_000_000)
    sign = "-" if nanos < 0 else ""
    whole, frac = divmod(abs(nanos), 1_000_000_000)
    if frac == 0:
        return f"{sign}{whole}s"
    return f"{sign}{whole}.{frac:09d}".rstrip("0") + "s"
