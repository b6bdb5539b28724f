"""The one backoff formula (common/backoff.py) and the loops that use it."""

import asyncio
import random

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st
from tenacity import RetryCallState

from common.backoff import backoff_delay, equal_jitter, exponential
from common.retrying import DependencyUnavailable, retry_connect, supervise, wait_backoff
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


def test_backoff_delay_is_the_jittered_exponential() -> None:
    draws = [backoff_delay(n, 0.1, 5.0, random.Random(n)) for n in range(1, 12)]
    ceilings = [exponential(n, 0.1, 5.0) for n in range(1, 12)]
    assert all(c / 2 <= d <= c for d, c in zip(draws, ceilings, strict=True))
    assert max(draws) <= 5.0


def test_tenacity_waits_the_same_formula() -> None:
    wait = wait_backoff(0.2, 3.0)
    for attempt in range(1, 10):
        state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        state.attempt_number = attempt
        ceiling = exponential(attempt, 0.2, 3.0)
        assert ceiling / 2 <= wait(state) <= ceiling


async def test_retry_connect_gives_up_after_its_deadline() -> None:
    attempts = 0

    async def refused() -> None:
        nonlocal attempts
        attempts += 1
        raise ConnectionRefusedError("no")

    with (
        structlog.testing.capture_logs() as logs,
        pytest.raises(DependencyUnavailable, match=r"broker unreachable after 0\.2s"),
    ):
        await retry_connect("broker", refused, deadline=0.2, initial=0.01, maximum=0.02)
    assert attempts >= 2
    retries = [entry for entry in logs if entry["event"] == "connect_retry"]
    assert len(retries) == attempts - 1
    assert all(entry["wait_s"] <= 0.02 for entry in retries)  # the cap holds


async def test_supervise_runs_a_crashed_loop_again_after_the_backoff() -> None:
    rounds = 0

    async def crashes_twice() -> None:
        nonlocal rounds
        rounds += 1
        if rounds <= 2:
            raise RuntimeError(f"bug {rounds}")

    with structlog.testing.capture_logs() as logs:
        await asyncio.wait_for(
            supervise("loop", crashes_twice, initial=0.01, maximum=0.02), timeout=5
        )
    assert rounds == 3
    crashes = [entry for entry in logs if entry["event"] == "background_task_crashed"]
    assert [entry["error"] for entry in crashes] == [
        "RuntimeError('bug 1')",
        "RuntimeError('bug 2')",
    ]
    assert all(entry["log_level"] == "error" and entry["task"] == "loop" for entry in crashes)
    assert [entry["wait_s"] <= 0.02 for entry in crashes] == [True, True]


async def test_supervise_ends_when_cancelled() -> None:
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    supervised = asyncio.create_task(supervise("loop", forever, maximum=1.0))
    await asyncio.wait_for(started.wait(), timeout=5)
    supervised.cancel()
    with pytest.raises(asyncio.CancelledError):
        await supervised
