"""Pure parts of the database layer and its test helpers."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common import db
from tests.support.database import postgres_env

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

pytestmark = pytest.mark.unit


@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 10_000))))
def test_merge_keeps_the_latest_time_per_id(pairs: list[tuple[int, int]]) -> None:
    observations = [(i, NOW + timedelta(seconds=s)) for i, s in pairs]
    merged = db.merge_observations(observations)
    assert set(merged) == {i for i, _ in pairs}
    for object_id, seen in merged.items():
        assert seen == max(t for i, t in observations if i == object_id)


def test_postgres_env_splits_a_url() -> None:
    assert postgres_env("postgresql://u:pw@h:6543/d") == {
        "POSTGRES_HOST": "h",
        "POSTGRES_PORT": "6543",
        "POSTGRES_DB": "d",
        "POSTGRES_USER": "u",
        "POSTGRES_PASSWORD": "pw",
    }
