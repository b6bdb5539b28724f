"""Reading a callback: its content type, its limits, its body parsed into ids — pure functions."""

from __future__ import annotations

import json
from dataclasses import dataclass

import orjson

from common.messages import INT64_MAX, INT64_MIN


@dataclass(frozen=True, slots=True)
class CallbackRejected(Exception):
    """A callback the producer refuses: ``status`` is the 4xx to answer, ``error`` a stable code."""

    status: int
    error: str
    detail: str


@dataclass(frozen=True, slots=True)
class CallbackLimits:
    """``MAX_BODY_BYTES`` and ``MAX_IDS_PER_CALLBACK``: larger callbacks are refused with 413."""

    max_body_bytes: int
    max_ids: int


def is_json_content_type(content_type: str | None) -> bool:
    """``application/json`` or ``application/<anything>+json``, parameters ignored."""
    if not content_type:
        return False
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def parse_callback(body: bytes, *, max_ids: int) -> list[int]:
    """Return the ids of a ``{"object_ids": [int, …]}`` body, or raise :class:`CallbackRejected`.

    Ids are JSON integers in the signed 64-bit range; anything else (floats, even ``1.0``,
    strings, booleans, nulls, nested lists) rejects the whole callback, so that a client with a
    bug learns about it instead of losing ids silently. Keys other than ``object_ids`` are
    ignored: a newer client's extra fields must not cost a callback.
    """
    data = _load_json(body)
    if not isinstance(data, dict):
        raise CallbackRejected(
            422,
            "invalid_body",
            f'expected a JSON object {{"object_ids": [...]}}, got {_kind(data)}',
        )
    if "object_ids" not in data:
        raise CallbackRejected(422, "invalid_body", 'missing key "object_ids"')
    ids = data["object_ids"]
    if not isinstance(ids, list):
        raise CallbackRejected(
            422, "invalid_ids", f"object_ids must be a list of integers, got {_kind(ids)}"
        )
    if len(ids) > max_ids:
        raise CallbackRejected(
            413, "too_many_ids", f"{len(ids)} ids in one callback; the limit is {max_ids}"
        )
    if ids and (set(map(type, ids)) != {int} or min(ids) < INT64_MIN or max(ids) > INT64_MAX):
        raise CallbackRejected(422, "invalid_ids", _first_bad_id(_exact_ids(body, ids)))
    return ids


def _load_json(body: bytes) -> object:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        # orjson refuses integers beyond 64 bits with a vague message. If the standard library can
        # read the body, it is valid JSON and the range check below names the offending id.
        try:
            return json.loads(body, parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            raise CallbackRejected(
                400, "invalid_json", f"body is not valid JSON: {error}"
            ) from None


def _exact_ids(body: bytes, ids: list[object]) -> list[object]:
    """The ids as written: orjson reads an integer too long for 64 bits as a float, which would
    make the error message blame a fraction that is not there."""
    try:
        exact = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return ids
    found = exact.get("object_ids") if isinstance(exact, dict) else None
    return found if isinstance(found, list) else ids


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _first_bad_id(ids: list[object]) -> str:
    for index, value in enumerate(ids):
        if type(value) is not int:
            return (
                f"object_ids[{index}] is {_kind(value)}; ids must be integers "
                f"in the signed 64-bit range"
            )
        if not INT64_MIN <= value <= INT64_MAX:
            return f"object_ids[{index}] = {value} is outside the signed 64-bit range"
    raise AssertionError("no invalid id found")  # pragma: no cover - guarded by the caller


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number with a fraction or exponent"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"
