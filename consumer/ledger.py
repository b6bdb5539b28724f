"""What one work message still waits for before it may be acknowledged.

A message is *settled*, and only then acked, when each of its ids is settled: stored (the batch
holding it committed), offline (nothing to store), or failed and handed to a retry or dead-letter
queue with a publisher confirm. Pure bookkeeping; the worker does the I/O.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Generic, TypeVar

from common.messages import IdsMessage

T = TypeVar("T")


class Next(Enum):
    WAIT = "wait"
    """Lookups, a commit or a hand-off are still outstanding."""
    HAND_OFF = "hand_off"
    """Every lookup answered and some failed: publish the failures, then check again."""
    ACK = "ack"
    """Settled: acknowledge the message."""


@dataclass(eq=False, slots=True)
class Delivery(Generic[T]):
    """One work message in process. ``token`` is whatever acks it (the AMQP message)."""

    token: T
    work: IdsMessage
    next_index: int = 0
    unresolved: int = field(init=False)
    unstored: int = 0
    failures: dict[int, str] = field(default_factory=dict)
    handing_off: bool = False
    handed_off: bool = False
    finished: bool = False
    arrived: float = field(default_factory=time.monotonic)  # for the oldest-unacked gauge

    def __post_init__(self) -> None:
        self.unresolved = len(self.work.ids)

    def answered_online(self) -> None:
        self.unresolved -= 1
        self.unstored += 1

    def answered_offline(self) -> None:
        self.unresolved -= 1

    def failed(self, object_id: int, reason: str) -> None:
        self.unresolved -= 1
        self.failures[object_id] = reason

    def stored(self) -> None:
        self.unstored -= 1

    def next_step(self) -> Next:
        """What this message needs now. ``ACK`` and ``HAND_OFF`` are returned once each: the
        caller acts on them."""
        if self.finished or self.unresolved or self.handing_off:
            return Next.WAIT
        if self.failures and not self.handed_off:
            self.handing_off = True
            return Next.HAND_OFF
        if self.unstored:
            return Next.WAIT
        self.finished = True
        return Next.ACK

    def hand_off_done(self) -> None:
        self.handing_off = False
        self.handed_off = True


def exhausted(attempt: int, max_attempts: int) -> bool:
    """Whether ids of a message that already failed ``attempt`` times, failing once more, have
    used up their ``max_attempts`` lookups."""
    return attempt + 1 >= max_attempts


def summarize(failures: dict[int, str], limit: int = 3) -> str:
    """One line for logs and the dead-letter header: the commonest reasons with their counts."""
    counts: dict[str, int] = {}
    for reason in failures.values():
        counts[reason] = counts.get(reason, 0) + 1
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    parts = [f"{reason} (x{count})" if count > 1 else reason for reason, count in ranked[:limit]]
    if len(ranked) > limit:
        parts.append(f"+{len(ranked) - limit} other reasons")
    return "; ".join(parts)
