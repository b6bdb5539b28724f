"""Which retry queue a failed id waits in, and for how long: exponential backoff with jitter.

The delay queues are fixed tiers (:data:`common.amqp.RETRY_TIERS_MS`, 250 ms·2^n) with a queue
TTL each. Jitter is a per-message ``expiration`` below the tier's TTL: RabbitMQ (3.10 quorum queues
included) expires a message at the smaller of the two. A message only expires at the head of its
queue, so a short one behind a long one waits for it: never longer than the tier's TTL.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from common.amqp import RETRY_TIERS_MS
from common.backoff import equal_jitter, exponential


@dataclass(frozen=True, slots=True)
class RetryPlan:
    tier_ms: int
    """The retry queue (by its TTL) the ids are published to."""
    expiration_ms: int
    """The message's own TTL, at most ``tier_ms``: the jittered delay."""


def tier_for(delay_ms: float) -> int:
    """The smallest tier that holds ``delay_ms`` (the largest tier if none does)."""
    for tier in RETRY_TIERS_MS:
        if tier >= delay_ms:
            return tier
    return RETRY_TIERS_MS[-1]


def retry_tiers(base_s: float, max_s: float) -> tuple[int, ...]:
    """Every tier a consumer with these delays can publish to (declared at start)."""
    low, high = tier_for(base_s * 1000), tier_for(max_s * 1000)
    return tuple(t for t in RETRY_TIERS_MS if low <= t <= high)


def plan_retry(
    failures: int, base_s: float, max_s: float, rng: random.Random | None = None
) -> RetryPlan:
    """Where ids that failed ``failures`` times wait: "equal jitter", uniform in
    ``[delay/2, delay]``, so that ids which failed together do not return together."""
    delay_ms = exponential(failures, base_s, max_s) * 1000
    tier = tier_for(delay_ms)
    draw = equal_jitter(delay_ms, rng)
    return RetryPlan(tier, max(1, min(tier, round(draw))))
