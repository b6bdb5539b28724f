"""The one retry mechanism: tenacity, waiting the formula of :mod:`common.backoff`.

* :func:`retry_connect`: connect to the broker or the database, bounded by a deadline. Used by
  :func:`common.amqp.connect_amqp` (the consumer's and ``replay-dead``'s broker connection),
  :func:`common.db.create_pool` and the Redis store's, and by the producer's publisher for each of
  its (re)connects;
* :func:`supervise`: keep a background loop alive across a crash (a bug in one round), forever
  but never faster than the capped backoff; a run that lasted ``healthy_after`` seconds starts
  the count again. Used by the producer's publisher and relay;
* :func:`wait_until_set`: wait for something another library retries (aio-pika's robust
  connection reconnecting, :class:`common.nodes.FailoverConnection`), in rounds of the same
  backoff, telling the caller each wait so that it can pace that library and act between rounds.

:func:`retry_connect` and :func:`supervise` log every failed attempt with the error and the wait
before the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    retry_if_result,
    stop_after_delay,
)
from tenacity.wait import wait_base

from common.backoff import backoff_delay

T = TypeVar("T")
log = structlog.get_logger(__name__)


class DependencyUnavailable(RuntimeError):
    """The broker or database did not answer within the start-up deadline."""


class wait_backoff(wait_base):
    """tenacity's wait for :func:`common.backoff.backoff_delay`: attempt ``n`` failed, wait the
    backoff of ``n`` failures in a row."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = initial
        self.maximum = maximum

    def __call__(self, retry_state: RetryCallState) -> float:
        return backoff_delay(retry_state.attempt_number, self.initial, self.maximum)


def _failed(state: RetryCallState) -> BaseException | None:
    return state.outcome.exception() if state.outcome else None


def _log_connect_retry(what: str) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        log.warning(
            "connect_retry",
            target=what,
            attempt=state.attempt_number,
            error=repr(_failed(state)),
            wait_s=round(state.upcoming_sleep, 2),
        )

    return before_sleep


def _log_crash(what: str, streak: CrashStreak) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        error = _failed(state)
        log.error(
            "background_task_crashed",
            task=what,
            attempt=state.attempt_number,
            crashes_in_a_row=streak.crashes,
            error=repr(error),
            wait_s=round(state.upcoming_sleep, 2),
            exc_info=error,
        )

    return before_sleep


async def retry_connect(
    what: str,
    attempt: Callable[[], Awaitable[T]],
    *,
    deadline: float,
    retry_on: tuple[type[BaseException], ...] = (OSError, ConnectionError, TimeoutError),
    initial: float = 0.2,
    maximum: float = 5.0,
) -> T:
    """Call ``attempt`` until it succeeds, waiting the backoff between attempts.

    Each failed attempt is logged (``connect_retry``). After ``deadline`` seconds (``math.inf``:
    never) the last error is wrapped in :class:`DependencyUnavailable`.
    """
    retrying = AsyncRetrying(
        stop=stop_after_delay(deadline),
        wait=wait_backoff(initial, maximum),
        retry=retry_if_exception_type(retry_on),
        before_sleep=_log_connect_retry(what),
        reraise=True,
    )
    try:
        result: T = await retrying(attempt)
    except retry_on as error:
        raise DependencyUnavailable(f"{what} unreachable after {deadline:g}s: {error!r}") from error
    log.info("connected", target=what)
    return result


class CrashStreak:
    """Crashes in a row of a supervised loop, for its backoff. A run that lasted at least
    ``healthy_after`` seconds was healthy: the crash that ends it is the first of a new streak,
    so that crashes days apart each wait the shortest backoff, not the cap."""

    def __init__(self, healthy_after: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.healthy_after = healthy_after
        self.crashes = 0
        self._clock = clock
        self._started = clock()

    def run_started(self) -> None:
        self._started = self._clock()

    def run_crashed(self) -> int:
        """Count the crash that ended the current run; return the crashes in a row."""
        if self._clock() - self._started >= self.healthy_after:
            self.crashes = 0
        self.crashes += 1
        return self.crashes


async def supervise(
    what: str,
    run: Callable[[], Awaitable[None]],
    *,
    initial: float = 1.0,
    maximum: float,
    healthy_after: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Run ``run`` until it returns. When it raises (a bug in one round), log the error with its
    traceback (``background_task_crashed``) and run it again after the backoff of the crashes in
    a row, at most ``maximum`` seconds. A run that lasted ``healthy_after`` seconds (default: the
    cap, ``maximum``) resets the count (:class:`CrashStreak`). Cancellation is not a crash: it
    ends the supervision. ``clock`` and ``sleep`` are for tests."""
    streak = CrashStreak(maximum if healthy_after is None else healthy_after, clock)

    def count_crash(_: RetryCallState) -> None:
        streak.run_crashed()

    retrying = AsyncRetrying(
        before=lambda _: streak.run_started(),
        after=count_crash,
        wait=lambda _: backoff_delay(streak.crashes, initial, maximum),
        retry=retry_if_exception_type(Exception),
        before_sleep=_log_crash(what, streak),
        sleep=sleep,
        reraise=True,
    )
    await retrying(run)


async def wait_until_set(
    event: asyncio.Event,
    *,
    initial: float,
    maximum: float,
    on_wait: Callable[[int, float], None],
    sleep: Callable[[float], Awaitable[None]] | None = None,
) -> None:
    """Return once ``event`` is set, looking at once and then after each wait of the backoff.
    Before the wait that follows the ``n``-th look that found it clear, call ``on_wait(n,
    seconds)``. The default ``sleep`` ends a wait early when ``event`` is set; tests pass their
    own."""

    async def until_set(seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)

    async def is_set() -> bool:
        return event.is_set()

    retrying = AsyncRetrying(
        wait=wait_backoff(initial, maximum),
        retry=retry_if_result(lambda answer: answer is False),
        before_sleep=lambda state: on_wait(state.attempt_number, state.upcoming_sleep),
        sleep=sleep or until_set,
    )
    await retrying(is_set)
