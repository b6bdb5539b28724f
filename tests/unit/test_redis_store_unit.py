"""Pure parts of the Redis store: REDIS_URL parsing and the millisecond value."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.store.redis import EPOCH, epoch_ms
from common.store.redis_url import RedisTarget, RedisUrlError, parse_redis_url

pytestmark = pytest.mark.unit


def test_one_node_with_credentials_database_and_tls() -> None:
    assert parse_redis_url("rediss://app:p%40ss@cache.internal:6380/3") == RedisTarget(
        nodes=(("cache.internal", 6380),), username="app", password="p@ss", db=3, tls=True
    )
    assert parse_redis_url("redis://localhost") == RedisTarget(
        nodes=(("localhost", 6379),), username=None, password=None, db=0, tls=False
    )


def test_a_seed_list_takes_scheme_and_credentials_from_the_first_entry() -> None:
    target = parse_redis_url("redis://:pw@10.0.0.1:7000, 10.0.0.2:7001,redis://10.0.0.3")
    assert target.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 7001), ("10.0.0.3", 6379))
    assert target.password == "pw"
    assert target.several


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "must start with redis://"),
        ("localhost:6379", "must start with redis://"),
        ("redis://:secret@host:0", "out of 1-65535"),
        ("redis://:secret@host:6379/16", "database must be a number 0-15"),
        ("redis://:secret@host:6379/?ssl=1", "no query"),
        ("redis://:secret@h1,rediss://h2", "every entry must use redis://"),
        ("redis://:secret@h1,redis://:other@h2", "credentials and database come from the first"),
        ("redis://:secret@/0", "names no host"),
    ],
)
def test_a_bad_url_names_the_entry_and_hides_the_password(value: str, message: str) -> None:
    with pytest.raises(RedisUrlError, match=message) as caught:
        parse_redis_url(value)
    assert "secret" not in str(caught.value)
    assert "other" not in str(caught.value)


@given(st.integers(min_value=0, max_value=4_102_444_800_000))
def test_epoch_ms_is_exact_for_every_millisecond(ms: int) -> None:
    seen = EPOCH + timedelta(milliseconds=ms)
    assert epoch_ms(seen) == ms
    assert epoch_ms(seen.astimezone(UTC)) == ms
    assert epoch_ms(datetime.fromtimestamp(0, UTC)) == 0


@given(
    st.datetimes(
        min_value=datetime(1970, 1, 1),
        max_value=datetime(2106, 2, 7),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))]),
    )
)
def test_epoch_ms_floors_any_microsecond_like_integer_arithmetic(seen: datetime) -> None:
    assert epoch_ms(seen) == (seen - EPOCH) // timedelta(milliseconds=1)


def test_epoch_ms_refuses_a_naive_datetime() -> None:
    with pytest.raises(ValueError, match="naive"):
        epoch_ms(datetime(2026, 12, 6, 12, 0))
