"""Exponential backoff with "equal jitter": the one formula every retry loop here uses.

The relay (broker away), the batch writer (database away), the consumer's retry tiers (status API
failing) and the routine (database away) all wait ``initial · 2^(failures-1)``, capped, and all but
the routine draw the actual wait uniformly from its upper half, so that clients which failed
together do not come back together.
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
