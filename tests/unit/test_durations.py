import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.durations import format_duration, parse_duration

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("3s", 3.0),
        ("500ms", 0.5),
        ("1m30s", 90.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        ("2h45m", 9900.0),
        ("100us", 0.0001),
        ("100µs", 0.0001),
        ("10ns", 1e-8),
        ("0", 0.0),
        ("2", 2.0),
        ("0.25", 0.25),
        (" 4s ", 4.0),
    ],
)
def test_parses_go_durations_and_plain_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["", " ", "abc", "-1s", "-2", "3x", "s", "1s2", "nan", "inf", "1e3", "1 s", "1.2.3s"]
)
def test_refuses_garbage_with_a_clear_message(text: str) -> None:
    with pytest.raises(ValueError, match="duration such as 3s"):
        parse_duration(text)


def test_refuses_booleans_and_negative_numbers() -> None:
    with pytest.raises(ValueError):
        parse_duration(True)
    with pytest.raises(ValueError):
        parse_duration(-1)
    with pytest.raises(ValueError):
        parse_duration(math.nan)


@given(
    hours=st.integers(0, 99),
    minutes=st.integers(0, 59),
    seconds=st.integers(0, 59),
    millis=st.integers(0, 999),
)
def test_compound_durations_add_up(hours: int, minutes: int, seconds: int, millis: int) -> None:
    text = f"{hours}h{minutes}m{seconds}s{millis}ms"
    expected = hours * 3600 + minutes * 60 + seconds + millis / 1000
    assert parse_duration(text) == pytest.approx(expected)


@given(st.floats(min_value=0, max_value=1e6, allow_nan=False))
def test_plain_seconds_round_trip_through_format(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, rel=1e-6, abs=1e-6)
