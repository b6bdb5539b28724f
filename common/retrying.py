"""Bounded, jittered, logged retries for connecting to the broker and the database."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

T = TypeVar("T")
log = structlog.get_logger(__name__)


class DependencyUnavailable(RuntimeError):
    """The broker or database did not answer within the start-up deadline."""


async def retry_connect(
    what: str,
    attempt: Callable[[], Awaitable[T]],
    *,
    deadline: float,
    retry_on: tuple[type[BaseException], ...] = (OSError, ConnectionError, TimeoutError),
    initial: float = 0.2,
    maximum: float = 5.0,
) -> T:
    """Call ``attempt`` until it succeeds, with exponential backoff and jitter.

    Each failed attempt is logged with the error and the wait before the next one. After
    ``deadline`` seconds the last error is wrapped in :class:`DependencyUnavailable`.
    """

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning(
            "connect_retry",
            target=what,
            attempt=state.attempt_number,
            error=repr(error),
            wait_s=round(state.upcoming_sleep, 2),
        )

    retrying = AsyncRetrying(
        stop=stop_after_delay(deadline),
        # exponential plus up to half a second of jitter, so replicas do not retry in step
        wait=wait_exponential(multiplier=initial, max=maximum) + wait_random(0, 0.5),
        retry=retry_if_exception_type(retry_on),
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        result: T = await retrying(attempt)
    except retry_on as error:
        raise DependencyUnavailable(f"{what} unreachable after {deadline:g}s: {error!r}") from error
    log.info("connected", target=what)
    return result
