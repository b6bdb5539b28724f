"""The one backoff formula (common/backoff.py) and the loops that use it."""

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.backoff import equal_jitter, exponential
from routine.expiry import next_delay

pytestmark = pytest.mark.unit


def test_delay_doubles_then_caps() -> None:
    assert [exponential(n, 1.0, 10.0) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert exponential(500, 1.0, 60.0) == 60.0
    with pytest.raises(ValueError):
        exponential(0, 1.0, 10.0)


@given(ceiling=st.floats(0.001, 1e6), seed=st.integers(0, 2**32))
def test_equal_jitter_stays_in_the_upper_half(ceiling: float, seed: int) -> None:
    assert ceiling / 2 <= equal_jitter(ceiling, random.Random(seed)) <= ceiling


def test_routine_waits_its_interval_then_backs_off_to_the_cap() -> None:
    assert [next_delay(3.0, n, 30.0) for n in range(6)] == [3.0, 3.0, 6.0, 12.0, 24.0, 30.0]
