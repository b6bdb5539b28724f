"""Go-style duration strings (``3s``, ``500ms``, ``1m30s``) and plain seconds."""

from __future__ import annotations

import math
import re

_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")

DURATION_HINT = "a duration such as 3s, 500ms, 1m30s or plain seconds"


def parse_duration(value: str | float | int) -> float:
    """Return ``value`` in seconds.

    Accepts what Go's ``time.ParseDuration`` accepts (without a sign) and plain non-negative
    numbers of seconds. Raises ``ValueError`` for anything else, including negatives, NaN and
    infinity, because a negative interval or timeout is never meant.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected {DURATION_HINT}, got a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip()
        if not text:
            raise ValueError(f"expected {DURATION_HINT}, got an empty value")
        seconds = _parse_text(text)
    if math.isnan(seconds) or math.isinf(seconds) or seconds < 0:
        raise ValueError(f"expected {DURATION_HINT}, got {value!r}")
    return seconds


def _parse_text(text: str) -> float:
    try:
        return float(text) if text.lstrip("+").replace(".", "", 1).isdigit() else _parse_go(text)
    except ValueError:
        raise ValueError(f"expected {DURATION_HINT}, got {text!r}") from None


def _parse_go(text: str) -> float:
    if text == "0":
        return 0.0
    position = 0
    total = 0.0
    for match in _PART.finditer(text):
        if match.start() != position:
            raise ValueError(text)
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if position != len(text) or position == 0:
        raise ValueError(text)
    return total


def format_duration(seconds: float) -> str:
    """Render seconds the way the docs and logs show durations (``1.5s``, ``250ms``)."""
    if seconds >= 1 or seconds == 0:
        return f"{_plain(seconds)}s"
    return f"{_plain(seconds * 1000)}ms"


def _plain(number: float) -> str:
    """Fixed-point, never exponent notation (which the parser, like Go's, refuses)."""
    return f"{number:.6f}".rstrip("0").rstrip(".") or "0"
