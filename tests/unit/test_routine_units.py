"""The routine's pure parts."""

import pytest

from routine.expiry import next_delay

pytestmark = pytest.mark.unit


def test_backoff_grows_after_failures_and_is_capped() -> None:
    assert next_delay(3.0, 0, 30.0) == 3.0
    assert next_delay(3.0, 1, 30.0) == 3.0
    assert next_delay(3.0, 3, 30.0) == 12.0
    assert next_delay(3.0, 10, 30.0) == 30.0
