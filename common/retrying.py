"""The one retry mechanism: tenacity, waiting the formula of :mod:`common.backoff`.

* :func:`retry_connect`: connect to the broker or the database, bounded by a deadline;
* :func:`supervise`: keep a background loop alive across a crash (a bug in one round), forever
  but never faster than the capped backoff.

Both log every failed attempt with the error and the wait before the next one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_delay
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


def _log_crash(what: str) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        error = _failed(state)
        log.error(
            "background_task_crashed",
            task=what,
            attempt=state.attempt_number,
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


async def supervise(
    what: str, run: Callable[[], Awaitable[None]], *, initial: float = 1.0, maximum: float
) -> None:
    """Run ``run`` until it returns. When it raises (a bug in one round), log the error with its
    traceback (``background_task_crashed``) and run it again after the backoff, at most
    ``maximum`` seconds. Cancellation is not a crash: it ends the supervision."""
    retrying = AsyncRetrying(
        wait=wait_backoff(initial, maximum),
        retry=retry_if_exception_type(Exception),
        before_sleep=_log_crash(what),
        reraise=True,
    )
    await retrying(run)
