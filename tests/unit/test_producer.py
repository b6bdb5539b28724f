"""Pure parts of the producer: parsing and validating callbacks, de-duplication, splitting,
settings, and how broker answers are settled (without a broker)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pamqp import commands as spec
from pydantic import ValidationError

from common.messages import INT64_MAX, INT64_MIN, OutgoingMessage
from producer.callback import CallbackRejected, is_json_content_type, parse_callback
from producer.confirms import PublishMode, Unconfirmed, settle
from producer.ingest import split_ids, unique_ids
from producer.settings import ProducerSettings

pytestmark = pytest.mark.unit


def rejected(body: bytes, max_ids: int = 10_000) -> CallbackRejected:
    with pytest.raises(CallbackRejected) as caught:
        parse_callback(body, max_ids=max_ids)
    return caught.value


def test_valid_body_returns_ids_as_sent() -> None:
    body = b'{"object_ids": [3, 1, 3, -2, 0, 9223372036854775807, -9223372036854775808]}'
    assert parse_callback(body, max_ids=10) == [3, 1, 3, -2, 0, INT64_MAX, INT64_MIN]


def test_empty_list_and_unknown_keys_are_accepted() -> None:
    assert parse_callback(b'{"object_ids": []}', max_ids=10) == []
    assert parse_callback(b'{"object_ids": [1], "source": "tester"}', max_ids=10) == [1]


@pytest.mark.parametrize(
    ("body", "status", "error", "says"),
    [
        (b"", 400, "invalid_json", "not valid JSON"),
        (b'{"object_ids": [1, 2', 400, "invalid_json", "not valid JSON"),
        (b'{"object_ids": [NaN]}', 400, "invalid_json", "not valid JSON"),
        (b"\xff\xfe", 400, "invalid_json", "not valid JSON"),
        (b"[1, 2]", 422, "invalid_body", "got a list"),
        (b"null", 422, "invalid_body", "got null"),
        (b"{}", 422, "invalid_body", 'missing key "object_ids"'),
        (b'{"objectIds": [1]}', 422, "invalid_body", 'missing key "object_ids"'),
        (b'{"object_ids": 5}', 422, "invalid_ids", "got an integer"),
        (b'{"object_ids": "1,2"}', 422, "invalid_ids", "got a string"),
        (b'{"object_ids": {"a": 1}}', 422, "invalid_ids", "got an object"),
        (b'{"object_ids": null}', 422, "invalid_ids", "got null"),
        (b'{"object_ids": [1, 2.5]}', 422, "invalid_ids", "object_ids[1] is a number"),
        (b'{"object_ids": [1.0]}', 422, "invalid_ids", "object_ids[0] is a number"),
        (b'{"object_ids": [1e3]}', 422, "invalid_ids", "object_ids[0] is a number"),
        (b'{"object_ids": [1, "2"]}', 422, "invalid_ids", "object_ids[1] is a string"),
        (b'{"object_ids": [true]}', 422, "invalid_ids", "object_ids[0] is a boolean"),
        (b'{"object_ids": [0, null]}', 422, "invalid_ids", "object_ids[1] is null"),
        (b'{"object_ids": [[1], 2]}', 422, "invalid_ids", "object_ids[0] is a list"),
        (b'{"object_ids": [{"id": 1}]}', 422, "invalid_ids", "object_ids[0] is an object"),
        (
            b'{"object_ids": [9223372036854775808]}',
            422,
            "invalid_ids",
            "9223372036854775808 is outside the signed 64-bit range",
        ),
        (
            b'{"object_ids": [1, -9223372036854775809]}',
            422,
            "invalid_ids",
            "object_ids[1] = -9223372036854775809 is outside",
        ),
        # Beyond 64 bits orjson fails or reads a float; the message still names the integer.
        (
            b'{"object_ids": [18446744073709551616]}',
            422,
            "invalid_ids",
            "18446744073709551616 is outside",
        ),
        (
            b'{"object_ids": [99999999999999999999999]}',
            422,
            "invalid_ids",
            "99999999999999999999999 is outside",
        ),
    ],
)
def test_bad_bodies_are_rejected_saying_what_is_wrong(
    body: bytes, status: int, error: str, says: str
) -> None:
    refusal = rejected(body)
    assert (refusal.status, refusal.error) == (status, error)
    assert says in refusal.detail


def test_more_ids_than_the_limit_is_413() -> None:
    assert parse_callback(orjson.dumps({"object_ids": list(range(5))}), max_ids=5)
    refusal = rejected(orjson.dumps({"object_ids": list(range(6))}), max_ids=5)
    assert (refusal.status, refusal.error) == (413, "too_many_ids")
    assert "6 ids" in refusal.detail and "limit is 5" in refusal.detail


def test_deeply_nested_json_is_a_400_not_a_crash() -> None:
    assert rejected(b'{"object_ids": ' + b"[" * 100_000 + b"]" * 100_000 + b"}").status in (
        400,
        422,
    )


@given(st.lists(st.integers(min_value=INT64_MIN, max_value=INT64_MAX), max_size=300))
def test_any_list_of_int64_round_trips(ids: list[int]) -> None:
    assert parse_callback(orjson.dumps({"object_ids": ids}), max_ids=10_000) == ids


@given(
    st.lists(st.integers(min_value=-50, max_value=50), max_size=300),
    st.integers(min_value=1, max_value=40),
)
def test_unique_then_split_keeps_every_id_once_in_first_seen_order(
    ids: list[int], per_message: int
) -> None:
    unique = unique_ids(ids)
    parts = list(split_ids(unique, per_message))
    flattened = [i for part in parts for i in part]
    assert flattened == unique
    assert len(set(flattened)) == len(flattened) == len(set(ids))
    assert all(1 <= len(part) <= per_message for part in parts)
    assert [i for n, i in enumerate(ids) if i not in ids[:n]] == unique


def test_split_with_one_id_per_message_reproduces_the_original_design() -> None:
    assert list(split_ids([5, 7, 9], 1)) == [[5], [7], [9]]
    assert list(split_ids([], 3)) == []


@pytest.mark.parametrize(
    ("content_type", "accepted"),
    [
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("Application/JSON", True),
        ("application/vnd.lastseen+json", True),
        ("text/plain", False),
        ("application/x-www-form-urlencoded", False),
        ("", False),
        (None, False),
    ],
)
def test_content_type(content_type: str | None, accepted: bool) -> None:
    assert is_json_content_type(content_type) is accepted


def test_settings_defaults_and_durations() -> None:
    settings = ProducerSettings(
        _env_file=None,
        amqp_uri="amqp://guest:guest@localhost/",
        queue_name="q",
        publish_timeout="500ms",
    )
    assert settings.producer_port == 9090
    assert settings.producer_host == "0.0.0.0"
    assert settings.max_body_bytes == 1024 * 1024
    assert settings.max_ids_per_callback == 10_000
    assert settings.publish_timeout == 0.5
    assert settings.ids_per_message >= 1
    assert settings.publish_mode is PublishMode.PIPELINE  # the fast path stays the default


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ids_per_message", 0),
        ("producer_port", 70000),
        ("publish_timeout", "-1s"),
        ("publish_timeout", "soon"),
        ("max_ids_per_callback", 0),
        ("publish_mode", "fast"),
    ],
)
def test_settings_refuse_nonsense(field: str, value: object) -> None:
    values: dict[str, Any] = {
        "amqp_uri": "amqp://guest:guest@localhost/",
        "queue_name": "q",
        field: value,
    }
    with pytest.raises(ValidationError) as caught:
        ProducerSettings(_env_file=None, **values)
    assert caught.value.errors()[0]["loc"] == (field,)


def test_every_setting_is_described() -> None:
    for name, field in ProducerSettings.model_fields.items():
        assert field.description, name


async def test_settle_tells_each_kind_of_answer_apart() -> None:
    """Both PUBLISH_MODEs report through settle(): what each broker answer means."""
    loop = asyncio.get_running_loop()
    messages = [OutgoingMessage(f"cb.{n}", b"{}") for n in range(5)]
    acked, returned, nacked, closed, silent = answers = [loop.create_future() for _ in messages]
    acked.set_result(spec.Basic.Ack(delivery_tag=1))
    returned.set_result(object())  # a Basic.Return resolves to the returned message
    nacked.set_exception(RuntimeError("nack"))
    closed.cancel()

    outcome = await settle(messages, answers, 0.01, "work")

    assert outcome.messages == messages[1:]
    assert outcome.queue_missing
    assert outcome.reasons == {
        "returned unroutable: no queue 'work'",
        "RuntimeError('nack')",
        "cancelled: channel closed",
        "confirm timeout",
    }
    assert silent.cancelled()  # a message not written yet is then never sent


async def test_settle_with_every_message_acked_or_none_at_all() -> None:
    loop = asyncio.get_running_loop()
    acked = loop.create_future()
    acked.set_result(spec.Basic.Ack(delivery_tag=1))
    confirmed = await settle([OutgoingMessage("cb.0", b"{}")], [acked], 1.0, "work")
    assert confirmed == Unconfirmed([])
    assert await settle([], [], 1.0, "work") == Unconfirmed([])


async def test_settle_returns_with_the_last_answer_not_at_the_timeout() -> None:
    loop = asyncio.get_running_loop()
    messages = [OutgoingMessage(f"cb.{n}", b"{}") for n in range(3)]
    answers = [loop.create_future() for _ in messages]
    for delay, answer in zip((0.0, 0.01, 0.02), answers, strict=True):
        loop.call_later(delay, answer.set_result, spec.Basic.Ack(delivery_tag=1))
    started = loop.time()

    outcome = await settle(messages, answers, 30.0, "work")

    assert outcome == Unconfirmed([])
    assert loop.time() - started < 10  # returned on the answers, long before the 30 s timeout
