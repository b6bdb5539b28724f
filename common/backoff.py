"""Exponential backoff with "equal jitter": the one formula every retry here waits.

``initial · 2^(failures-1)``, capped at ``maximum``, the actual wait drawn uniformly from the upper
half of that, so that clients which failed together do not come back together. Who waits it:

* :mod:`common.retrying` (tenacity, through :class:`common.retrying.wait_backoff`): connecting to
  the broker or the database (each service's start-up, the producer's reconnects) and the
  producer's supervised background loops;
* the producer's relay (broker away), the consumer's batch writer (database away) and its retry
  tiers (status API failing), which count their failures themselves and call :func:`backoff_delay`
  or the two parts below;
* the routine (database away) waits :func:`exponential` without the jitter: one replica holds the
  lock, so there is no herd to spread.

Not from here: aio-pika's robust connection (the consumer's, after its first connect) reconnects
on its own every ``reconnect_interval`` seconds.
"""

from __future__ import annotations

import random


def exponential(failures: int, initial: float, maximum: float) -> float:
    """Wait before attempt ``failures + 1``: ``initial · 2^(failures-1)``, at most ``maximum``."""
    if failures < 1:
        raise ValueError("a backoff follows at least one failure")
    return min(initial * float(1 << min(failures - 1, 62)), maximum)


def equal_jitter(ceiling: float, rng: random.Random | None = None) -> float:
    """A wait drawn uniformly from ``[ceiling/2, ceiling]``."""
    return (rng or random).uniform(ceiling / 2, ceiling)


def backoff_delay(
    failures: int, initial: float, maximum: float, rng: random.Random | None = None
) -> float:
    """The wait after ``failures`` failures in a row: the formula above, jittered."""
    return equal_jitter(exponential(failures, initial, maximum), rng)
