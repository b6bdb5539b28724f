"""The work message: a slice of one callback's ids, as JSON.

``{"v": 1, "callback_id": "…", "received_at": "2026-…Z", "ids": [1, 2, …], "attempt": 0}``

``attempt`` counts failed status lookups already behind these ids (0 for a fresh message from the
producer); the consumer raises it when it sends ids to a retry queue.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import orjson

SCHEMA_VERSION = 1
CONTENT_TYPE = "application/json"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class MalformedMessage(ValueError):
    """A message that can never be processed: dead-letter it, do not retry or requeue it."""


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """An encoded work message on its way to the broker (spooled first if the broker is away)."""

    message_id: str
    body: bytes


@dataclass(frozen=True, slots=True)
class IdsMessage:
    callback_id: str
    received_at: datetime
    ids: list[int]
    attempt: int = 0

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "v": SCHEMA_VERSION,
                "callback_id": self.callback_id,
                "received_at": self.received_at,
                "ids": self.ids,
                "attempt": self.attempt,
            },
            option=orjson.OPT_UTC_Z,
        )


def decode_message(body: bytes) -> IdsMessage:
    """Parse and validate a work message; raise :class:`MalformedMessage` saying what is wrong."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise MalformedMessage(f"not JSON: {error}") from None
    if not isinstance(data, dict):
        raise MalformedMessage("not a JSON object")
    version = data.get("v")
    if version != SCHEMA_VERSION:
        raise MalformedMessage(f"unknown schema version {version!r}")
    ids = data.get("ids")
    if not isinstance(ids, list) or not all(
        type(i) is int and INT64_MIN <= i <= INT64_MAX for i in ids
    ):
        raise MalformedMessage("ids must be a list of 64-bit integers")
    callback_id = data.get("callback_id")
    if not isinstance(callback_id, str) or not callback_id:
        raise MalformedMessage("callback_id must be a non-empty string")
    attempt = data.get("attempt", 0)
    if type(attempt) is not int or attempt < 0:
        raise MalformedMessage("attempt must be a non-negative integer")
    try:
        received_at = datetime.fromisoformat(data["received_at"])
    except (KeyError, TypeError, ValueError):
        raise MalformedMessage("received_at must be an ISO 8601 time") from None
    if received_at.tzinfo is None:
        raise MalformedMessage("received_at must carry a time zone")
    return IdsMessage(callback_id, received_at, ids, attempt)
