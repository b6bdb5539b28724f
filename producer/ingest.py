"""Accepting a callback: de-duplicate, cut into messages, publish with confirms or spool.

:class:`Ingest` is what HTTP code sees of the core (:class:`producer.view.IngestView`): it is
handed the publisher and the spool as the small interfaces below and owns neither; their lives
belong to :func:`producer.service.running_core`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Protocol

import structlog

from common.messages import IdsMessage, OutgoingMessage
from producer.view import Accepted, BrokerState, Readiness

log = structlog.get_logger(__name__)


def unique_ids(ids: Sequence[int]) -> list[int]:
    """``ids`` without repeats, in order of first occurrence."""
    return list(dict.fromkeys(ids))


def split_ids(ids: Sequence[int], per_message: int) -> Iterator[list[int]]:
    """Consecutive slices of at most ``per_message`` ids."""
    for start in range(0, len(ids), per_message):
        yield list(ids[start : start + per_message])


class CallbackPublisher(Protocol):
    """What a callback needs of the broker (:class:`producer.broker.ProducerBroker`)."""

    @property
    def accepting(self) -> bool: ...

    @property
    def connected(self) -> bool: ...

    @property
    def state(self) -> BrokerState: ...

    async def publish(
        self, messages: Sequence[OutgoingMessage], confirm_timeout: float
    ) -> list[OutgoingMessage]: ...


class CallbackSpool(Protocol):
    """What a callback needs of :class:`producer.spool.Spool`."""

    @property
    def depth(self) -> int: ...

    @property
    def writable(self) -> bool: ...

    async def append(self, messages: Sequence[OutgoingMessage], callback_id: str) -> None: ...

    async def oldest_age(self) -> float: ...


class Ingest:
    """:meth:`accept` raises :class:`producer.view.SpoolUnavailable` only when the broker did not
    confirm and the spool could not store the callback either."""

    def __init__(
        self,
        publisher: CallbackPublisher,
        spool: CallbackSpool,
        *,
        ids_per_message: int,
        publish_timeout: float,
    ) -> None:
        self._publisher = publisher
        self._spool = spool
        self._ids_per_message = ids_per_message
        self._publish_timeout = publish_timeout

    def readiness(self) -> Readiness:
        publisher, spool = self._publisher, self._spool
        return Readiness(
            # Can a callback be made durable right now (broker or spool)?
            ready=publisher.connected or spool.writable,
            broker=publisher.state,
            spool_depth=spool.depth,
            spool_writable=spool.writable,
        )

    @property
    def spool_depth(self) -> int:
        return self._spool.depth

    async def spool_oldest_age(self) -> float:
        return await self._spool.oldest_age()

    async def accept(self, callback_id: str, ids: list[int]) -> Accepted:
        """Make ``ids`` durable as the work messages of callback ``callback_id``."""
        unique = unique_ids(ids)
        if not unique:
            return Accepted(callback_id, 0, spooled=False)
        received_at = datetime.now(UTC)
        messages = [
            OutgoingMessage(
                f"{callback_id}.{part}", IdsMessage(callback_id, received_at, chunk).encode()
            )
            for part, chunk in enumerate(split_ids(unique, self._ids_per_message))
        ]
        publisher = self._publisher
        unconfirmed = (
            await publisher.publish(messages, self._publish_timeout)
            if publisher.accepting
            else messages
        )
        if unconfirmed:
            await self._spool.append(unconfirmed, callback_id)
            # callback_id comes from the context the HTTP layer binds for the callback.
            log.info(
                "callback_spooled",
                ids=len(unique),
                messages=len(unconfirmed),
                broker=publisher.state,
                spool_depth=self._spool.depth,
            )
        return Accepted(callback_id, len(unique), spooled=bool(unconfirmed))
