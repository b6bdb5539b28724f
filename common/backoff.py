"""Exponential backoff with "equal jitter": the one formula every retry here waits.

``initial · 2^(failures-1)``, capped at ``maximum``, the actual wait drawn uniformly from the upper
half of that, so that clients which failed together do not come back together. Who waits it:

* :mod:`common.retrying` (tenacity, through :class:`common.retrying.wait_backoff`): connecting to
  the broker, the database or Redis at start-up (:func:`~common.retrying.retry_connect`), each of
  the producer's reconnects, the producer's supervised background loops (publisher, relay:
  :func:`~common.retrying.supervise`), and the consumer's and ``replay-dead``'s robust broker
  connection after a drop (:class:`common.nodes.FailoverConnection` sets aio-pika's
  ``reconnect_interval`` to each wait of :func:`~common.retrying.wait_until_set`);
* loops that count their failures themselves, because a round there is more than one call that
  fails or not, call :func:`backoff_delay`: the producer's relay (broker away or refusing), the
  consumer's batch writer (database away) and the routine (database away: from its interval up);
* the consumer's retry tiers (status API failing) call the two parts, :func:`exponential` and
  :func:`equal_jitter`, because they round the wait to a delay queue's tier in between
  (:mod:`consumer.backoff`).
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
