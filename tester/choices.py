"""The tester's decisions, as pure functions of a ``random.Random`` the caller owns and seeds."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from random import Random

from common.messages import INT64_MAX, INT64_MIN

_OBJECT_ID = re.compile(r"([+-]?)([0-9]+)")


class Fault(StrEnum):
    """What one ``GET /objects/{id}`` will do."""

    NONE = "none"
    ERROR = "error"  # 500
    HANG = "hang"  # no answer until the client gives up
    GARBAGE = "garbage"  # 200 with a body a careful client must refuse


@dataclass(frozen=True)
class FaultRates:
    error: float = 0.0
    hang: float = 0.0
    garbage: float = 0.0

    def __post_init__(self) -> None:
        rates = (self.error, self.hang, self.garbage)
        if any(not 0 <= rate <= 1 for rate in rates) or sum(rates) > 1:
            raise ValueError("each rate must be within 0..1 and together they must not exceed 1")


def pick_ids(rng: Random, id_range: int, max_ids: int) -> list[int]:
    """The ids of one callback, as the original draws them.

    ``rand.Intn(max_ids + 1)`` of them, each ``rand.Intn(id_range)``: repeats are kept, because
    the original sends them and a producer has to cope.
    """
    count = rng.randrange(max_ids + 1)
    return [rng.randrange(id_range) for _ in range(count)]


def choose_delay(rng: Random, low: float, high: float) -> float:
    """Seconds to wait before answering, uniform in ``[low, high]``."""
    return rng.uniform(low, high)


def choose_fault(rng: Random, rates: FaultRates) -> Fault:
    """One draw decides; the three rates are disjoint slices of ``[0, 1)``."""
    draw = rng.random()
    if draw < rates.error:
        return Fault.ERROR
    if draw < rates.error + rates.hang:
        return Fault.HANG
    if draw < rates.error + rates.hang + rates.garbage:
        return Fault.GARBAGE
    return Fault.NONE


def parse_object_id(text: str) -> int | None:
    """The id in ``/objects/{id}`` as Go's ``strconv.Atoi`` reads it, or ``None`` (→ 400).

    An optional sign and ASCII digits, within int64. Unlike Python's ``int()``, no whitespace,
    underscores or non-ASCII digits.
    """
    match = _OBJECT_ID.fullmatch(text)
    if match is None:
        return None
    digits = match.group(2).lstrip("0") or "0"
    if len(digits) > 19:  # longer than int64 can hold; also keeps int() away from huge strings
        return None
    value = -int(digits) if match.group(1) == "-" else int(digits)
    return value if INT64_MIN <= value <= INT64_MAX else None


def object_body(object_id: int) -> bytes:
    """The answer for ``object_id``: online when the id is even (Go's ``id%2 == 0``)."""
    online = "true" if object_id % 2 == 0 else "false"
    return b'{"id":%d,"online":%s}' % (object_id, online.encode())


def garbage_body(rng: Random, object_id: int) -> bytes:
    """A 200 body that is not a valid answer for ``object_id``: a strict client refuses each."""
    other = object_id + 1 if object_id < INT64_MAX else object_id - 1
    variants = (
        b"<html><body><h1>502 Bad Gateway</h1></body></html>",
        b"",
        b'{"id":%d,"online":' % object_id,
        b'{"id":%d}' % object_id,
        b'{"online":true}',
        object_body(other),
        b'{"id":%d,"online":"yes"}' % object_id,
        b'{"id":"%d","online":true}' % object_id,
        b"null",
        b"[]",
    )
    return variants[rng.randrange(len(variants))]
