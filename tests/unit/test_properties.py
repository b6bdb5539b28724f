"""Properties of the pure parts, over generated input: callback parsing, de-duplication and
splitting, the work message, duration parsing, and merging a batch's observations.

These extend the example-based and property tests in test_producer.py, test_durations.py and
test_db.py; they do not repeat them.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.db import merge_observations
from common.durations import parse_duration
from common.messages import INT64_MAX, INT64_MIN, IdsMessage, MalformedMessage, decode_message
from producer.callback import CallbackRejected, parse_callback
from producer.ingest import split_ids, unique_ids

pytestmark = pytest.mark.unit

MAX_IDS = 50
int64 = st.integers(min_value=INT64_MIN, max_value=INT64_MAX)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=20,
)


def _expected_ids(value: object) -> list[int] | None:
    """The oracle: what a valid body carries, or None for one that must be refused."""
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        return None  # NaN or Infinity anywhere, even in an ignored key: not JSON
    if not isinstance(value, dict) or not isinstance(value.get("object_ids"), list):
        return None
    ids: list[int] = value["object_ids"]
    if len(ids) > MAX_IDS:
        return None
    if all(type(i) is int and INT64_MIN <= i <= INT64_MAX for i in ids):
        return ids
    return None


def _encode(value: object) -> bytes:
    # The standard library writes NaN/Infinity and integers of any size, as a careless client
    # would; orjson would refuse them.
    return json.dumps(value).encode()


# --- callback bodies -------------------------------------------------------------------------


@given(st.binary(max_size=200))
def test_any_bytes_are_parsed_or_refused_with_a_4xx(body: bytes) -> None:
    try:
        ids = parse_callback(body, max_ids=MAX_IDS)
    except CallbackRejected as refusal:
        assert refusal.status in (400, 413, 422) and refusal.error and refusal.detail
    else:
        assert all(type(i) is int for i in ids)


@given(
    json_values
    | st.fixed_dictionaries({"object_ids": json_values})
    | st.fixed_dictionaries({"object_ids": st.lists(json_values | st.integers(), max_size=60)})
    | st.fixed_dictionaries(
        {"object_ids": st.lists(int64, max_size=60)}, optional={"x": json_values}
    )
)
def test_a_body_is_accepted_exactly_when_it_is_an_object_with_a_list_of_int64(
    value: Any,
) -> None:
    expected = _expected_ids(value)
    try:
        ids = parse_callback(_encode(value), max_ids=MAX_IDS)
    except CallbackRejected as refusal:
        assert expected is None, refusal
        assert refusal.status in (400, 413, 422)
    else:
        assert ids == expected


@given(
    st.lists(
        st.integers(min_value=INT64_MAX + 1, max_value=2**80)
        | st.integers(min_value=-(2**80), max_value=INT64_MIN - 1),
        min_size=1,
        max_size=3,
    ),
    st.lists(int64, max_size=3),
)
def test_an_id_beyond_64_bits_is_named_in_the_refusal(
    outside: list[int], inside: list[int]
) -> None:
    ids = inside + outside
    with pytest.raises(CallbackRejected) as caught:
        parse_callback(_encode({"object_ids": ids}), max_ids=MAX_IDS)
    assert caught.value.status == 422
    assert f"object_ids[{len(inside)}] = {outside[0]}" in caught.value.detail


# --- de-duplication and splitting ------------------------------------------------------------


@given(st.lists(int64, max_size=300))
def test_unique_ids_is_idempotent_and_keeps_the_set(ids: list[int]) -> None:
    unique = unique_ids(ids)
    assert unique_ids(unique) == unique
    assert set(unique) == set(ids)


@given(st.lists(int64, max_size=300), st.integers(min_value=1, max_value=400))
def test_split_makes_the_fewest_full_messages(ids: list[int], per_message: int) -> None:
    parts = list(split_ids(ids, per_message))
    assert len(parts) == math.ceil(len(ids) / per_message)
    assert all(len(part) == per_message for part in parts[:-1])


# --- the work message ------------------------------------------------------------------------

aware_times = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(9998, 12, 31), timezones=st.just(UTC)
) | st.builds(
    lambda t, minutes: t.replace(tzinfo=timezone(timedelta(minutes=minutes))),
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9998, 12, 31)),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
)


@given(
    st.text(min_size=1, max_size=40),
    aware_times,
    st.lists(int64, max_size=200),
    st.integers(min_value=0, max_value=1000),
)
def test_a_work_message_decodes_to_what_was_encoded(
    callback_id: str, received_at: datetime, ids: list[int], attempt: int
) -> None:
    message = IdsMessage(callback_id, received_at, ids, attempt)
    decoded = decode_message(message.encode())
    assert decoded == message
    assert decoded.received_at.utcoffset() is not None


almost_messages = st.fixed_dictionaries(
    {"v": st.just(1) | json_values, "callback_id": st.text(max_size=3) | json_values},
    optional={
        "received_at": st.just("2026-01-01T00:00:00Z") | st.just("2026-01-01T00:00") | json_values,
        "ids": st.lists(int64 | json_values, max_size=4) | json_values,
        "attempt": st.integers(-2, 2) | json_values,
    },
)


@given(st.binary(max_size=200) | (json_values | almost_messages).map(_encode))
def test_any_body_on_the_work_queue_decodes_or_is_malformed(body: bytes) -> None:
    try:
        decoded = decode_message(body)
    except MalformedMessage as error:
        assert str(error)
    else:
        assert decoded.callback_id and decoded.attempt >= 0


# --- durations -------------------------------------------------------------------------------

UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
amounts = st.integers(0, 10_000).map(str) | st.decimals(
    min_value=0, max_value=10_000, places=3, allow_nan=False, allow_infinity=False
).map(lambda d: format(d, "f"))


@given(st.lists(st.tuples(amounts, st.sampled_from(sorted(UNITS))), min_size=1, max_size=6))
def test_go_durations_with_any_units_order_and_fractions_add_up(
    parts: list[tuple[str, str]],
) -> None:
    text = "".join(amount + unit for amount, unit in parts)
    expected = sum(float(amount) * UNITS[unit] for amount, unit in parts)
    assert parse_duration(text) == pytest.approx(expected, rel=1e-9, abs=1e-12)


@given(st.text(max_size=20))
def test_any_text_is_a_finite_non_negative_duration_or_a_clear_refusal(text: str) -> None:
    try:
        seconds = parse_duration(text)
    except ValueError as error:
        assert "duration such as 3s" in str(error)
    else:
        assert math.isfinite(seconds) and seconds >= 0


# --- merging a batch's observations ----------------------------------------------------------

observations = st.lists(st.tuples(st.integers(0, 30), aware_times), max_size=60)


@given(observations, st.randoms(use_true_random=False))
def test_merge_ignores_arrival_order(pairs: list[tuple[int, datetime]], rng: Any) -> None:
    shuffled = list(pairs)
    rng.shuffle(shuffled)
    assert merge_observations(shuffled) == merge_observations(pairs)


@given(observations, observations)
def test_merging_merged_batches_equals_merging_everything(
    first: list[tuple[int, datetime]], second: list[tuple[int, datetime]]
) -> None:
    """What the batch writer relies on when rows arriving during a failed flush ride along."""
    partial = [*merge_observations(first).items(), *merge_observations(second).items()]
    assert merge_observations(partial) == merge_observations(first + second)
    # Never earlier than any observation, across time zones.
    merged = merge_observations(first + second)
    assert all(merged[i] >= t for i, t in first + second)
