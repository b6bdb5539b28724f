"""Wait on a condition with a deadline — never a fixed sleep that hopes the work is done."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class ConditionTimeout(AssertionError):
    pass


def wait_until(
    condition: Callable[[], T], *, timeout: float, interval: float = 0.05, what: str = ""
) -> T:
    """Poll ``condition`` until it returns something truthy; return that. Fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = condition()
        if last:
            return last
        if time.monotonic() > deadline:
            raise ConditionTimeout(f"not within {timeout}s: {what or condition} (last={last!r})")
        time.sleep(interval)


async def eventually(
    condition: Callable[[], Awaitable[T] | T],
    *,
    timeout: float,
    interval: float = 0.05,
    what: str = "",
) -> T:
    """Async :func:`wait_until`: call ``condition`` (sync or async) until truthy; return that."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        outcome = condition()
        last = await outcome if inspect.isawaitable(outcome) else outcome  # type: ignore[assignment]
        if last:
            return last
        if time.monotonic() > deadline:
            raise ConditionTimeout(f"not within {timeout}s: {what or condition} (last={last!r})")
        await asyncio.sleep(interval)
