"""Accepting a callback: de-duplicate, cut into messages, publish with confirms or spool."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from common.messages import IdsMessage, OutgoingMessage
from producer.callback import split_ids, unique_ids
from producer.publisher import Publisher
from producer.relay import Relay
from producer.settings import ProducerSettings
from producer.spool import Spool

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Accepted:
    callback_id: str
    accepted: int
    spooled: bool


def new_callback_id() -> str:
    return os.urandom(16).hex()


class Ingest:
    """The producer's core, below HTTP: owns the publisher and relay tasks while :meth:`running`.

    :meth:`accept` raises :class:`producer.spool.SpoolUnavailable` only when the broker did not
    confirm and the spool could not store the callback either.
    """

    def __init__(self, settings: ProducerSettings, publisher: Publisher, spool: Spool) -> None:
        self.settings = settings
        self.publisher = publisher
        self.spool = spool
        self.relay = Relay(
            spool,
            publisher,
            batch_size=settings.relay_batch_size,
            publish_timeout=settings.relay_publish_timeout,
            max_backoff=settings.broker_max_backoff,
        )
        self.stopping = False

    @property
    def ready(self) -> bool:
        """Can a callback be made durable right now (broker or spool)?"""
        return not self.stopping and (self.publisher.connected or self.spool.writable)

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
            for part, chunk in enumerate(split_ids(unique, self.settings.ids_per_message))
        ]
        unconfirmed = (
            await self.publisher.publish(messages, self.settings.publish_timeout)
            if self.publisher.accepting
            else messages
        )
        if unconfirmed:
            await self.spool.append(unconfirmed)
            # callback_id comes from the context the HTTP layer binds for the callback.
            log.info(
                "callback_spooled",
                ids=len(unique),
                messages=len(unconfirmed),
                broker=self.publisher.state,
                spool_depth=self.spool.depth,
            )
        return Accepted(callback_id, len(unique), spooled=bool(unconfirmed))

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run the connection and the relay; on exit give the relay a bounded time to drain."""
        connection = asyncio.create_task(
            _supervised("broker-connection", self.publisher.run), name="broker-connection"
        )
        relay = asyncio.create_task(_supervised("spool-relay", self.relay.run), name="spool-relay")
        log.info(
            "producer_started",
            ids_per_message=self.settings.ids_per_message,
            publish_timeout_s=self.settings.publish_timeout,
            spool_path=str(self.settings.spool_path),
            spool_depth=self.spool.depth,
        )
        try:
            yield
        finally:
            self.stopping = True
            drained = await self.relay.drain(self.settings.shutdown_grace)
            relay.cancel()
            was_connected = self.publisher.connected
            self.publisher.close()
            if was_connected:
                # Give the connection a moment to close cleanly; a reconnect loop is cancelled.
                await asyncio.wait({connection}, timeout=2)
            connection.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connection
            with contextlib.suppress(asyncio.CancelledError):
                await relay
            log.info("producer_stopped", spool_drained=drained, spool_depth=self.spool.depth)


async def _supervised(name: str, run: Callable[[], Awaitable[None]]) -> None:
    """Run a background loop; a bug in one round must not end ingestion for good."""
    while True:
        try:
            await run()
            return
        except Exception:
            log.exception("background_task_crashed", task=name)
        await asyncio.sleep(1.0)
