"""The one backoff formula (common/backoff.py) and the loops that use it."""

import asyncio
import random

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st
from tenacity import RetryCallState

from common.backoff import backoff_delay, equal_jitter, exponential
from common.retrying import (
    CrashStreak,
    DependencyUnavailable,
    retry_connect,
    supervise,
    wait_backoff,
    wait_until_set,
)
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


def test_routine_waits_its_interval_then_backs_off_to_the_cap_with_jitter() -> None:
    assert next_delay(3.0, 0, 30.0) == 3.0
    for failures, ceiling in enumerate([3.0, 6.0, 12.0, 24.0, 30.0, 30.0], 1):
        draws = {next_delay(3.0, failures, 30.0, random.Random(seed)) for seed in range(20)}
        assert all(ceiling / 2 <= draw <= ceiling for draw in draws)
        assert len(draws) > 1  # replicas that failed together spread out


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


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_crash_streak_counts_quick_crashes_and_restarts_after_a_healthy_run() -> None:
    clock = FakeClock()
    streak = CrashStreak(healthy_after=5.0, clock=clock)
    counts = []
    for lasted in (0.1, 0.1, 4.9, 5.0, 0.1, 3600.0):
        streak.run_started()
        clock.now += lasted
        counts.append(streak.run_crashed())
    assert counts == [1, 2, 3, 1, 2, 1]


async def test_supervise_waits_less_again_after_a_healthy_run() -> None:
    """Three quick crashes grow the wait to the cap; a run that outlived the cap crashes and
    waits the shortest backoff again (fake clock and sleep: nothing waits)."""
    clock = FakeClock()
    lasted = iter([0.0, 0.0, 0.0, 10.0, 0.0])
    waits: list[float] = []

    async def run() -> None:
        step = next(lasted, None)
        if step is None:
            return
        clock.now += step
        raise RuntimeError("bug")

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.now += seconds

    with structlog.testing.capture_logs() as logs:
        await supervise("loop", run, initial=1.0, maximum=4.0, clock=clock, sleep=sleep)
    ceilings = [1.0, 2.0, 4.0, 1.0, 2.0]
    assert len(waits) == len(ceilings)
    assert all(c / 2 <= w <= c for w, c in zip(waits, ceilings, strict=True))
    crashes = [e for e in logs if e["event"] == "background_task_crashed"]
    assert [e["crashes_in_a_row"] for e in crashes] == [1, 2, 3, 1, 2]
    assert [e["attempt"] for e in crashes] == [1, 2, 3, 4, 5]


async def test_wait_until_set_waits_the_backoff_between_looks() -> None:
    """What FailoverConnection paces aio-pika's reconnects with: one look at once, then the
    capped jittered backoff before each next look, reported before each wait."""
    event = asyncio.Event()
    reported: list[tuple[int, float]] = []
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 6:
            event.set()  # connected during the sixth wait

    await wait_until_set(
        event, initial=0.2, maximum=1.0, on_wait=lambda n, s: reported.append((n, s)), sleep=sleep
    )
    assert [n for n, _ in reported] == [1, 2, 3, 4, 5, 6]
    assert [s for _, s in reported] == slept
    ceilings = [exponential(n, 0.2, 1.0) for n in range(1, 7)]
    assert all(c / 2 <= s <= c for s, c in zip(slept, ceilings, strict=True))
    assert ceilings[-2:] == [1.0, 1.0]  # the cap holds


async def test_wait_until_set_returns_at_once_when_already_set() -> None:
    event = asyncio.Event()
    event.set()
    reported: list[tuple[int, float]] = []
    await wait_until_set(
        event, initial=0.2, maximum=1.0, on_wait=lambda n, s: reported.append((n, s))
    )
    assert reported == []


async def test_wait_until_set_ends_a_wait_when_the_event_is_set() -> None:
    """The default sleep wakes on the event, not at the end of the wait (a 1-hour backoff here:
    the test would time out if it did not)."""
    event = asyncio.Event()
    waiting = asyncio.create_task(
        wait_until_set(event, initial=3600.0, maximum=3600.0, on_wait=lambda n, s: event.set())
    )
    await asyncio.wait_for(waiting, timeout=5)
