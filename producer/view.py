"""What HTTP code may see of the producer's core: a callback's answer, the broker's state, the
error of a callback that could not be stored, and a read-only view (:class:`IngestView`) instead
of the publisher, relay and spool themselves."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class BrokerState(StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    BLOCKED = "blocked"  # a broker resource alarm: publishes would stall, not fail
    DEGRADED = "degraded"  # a publish went unconfirmed; the relay probes until one succeeds
    STOPPED = "stopped"


class SpoolUnavailable(RuntimeError):
    """The spool could not store or read messages (disk full, file unwritable, corrupt).

    Raised by :mod:`producer.spool`; defined here so that HTTP code, which answers it with 503,
    imports the view and not the spool."""


@dataclass(frozen=True, slots=True)
class Accepted:
    callback_id: str
    accepted: int
    spooled: bool


@dataclass(frozen=True, slots=True)
class Readiness:
    """Whether a callback can be made durable now, and why (``GET /ready``)."""

    ready: bool
    broker: BrokerState
    spool_depth: int
    spool_writable: bool


class IngestView(Protocol):
    async def accept(self, callback_id: str, ids: list[int]) -> Accepted:
        """Make ``ids`` durable; raises :class:`SpoolUnavailable` when neither
        the broker nor the spool could store them."""
        ...

    def readiness(self) -> Readiness: ...

    @property
    def spool_depth(self) -> int:
        """Messages in the spool waiting for the relay."""
        ...

    async def spool_oldest_age(self) -> float:
        """Seconds since the oldest spooled message was written (0: empty)."""
        ...
