"""The relay: moves spooled messages to the broker, oldest first, deleting each only after its
confirm. While the broker is away or refuses, it backs off (:func:`common.backoff.backoff_delay`).

When it pushes is decided here and nowhere else: when the spool has messages (the spool says so:
:meth:`producer.spool.Spool.wait_appended`) and the broker is connected and not blocked. What a
round's outcome means for the producer (degraded or not, reconnect or not) is the publisher's
business: the relay reports each round to it (``publish_spooled``, ``spool_empty``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

import structlog

from common.backoff import backoff_delay
from common.messages import OutgoingMessage
from common.retrying import supervise
from producer.spool import SpooledMessage, SpoolUnavailable
from producer.view import BrokerState

log = structlog.get_logger(__name__)


class SpoolSource(Protocol):
    """What the relay needs of :class:`producer.spool.Spool`."""

    @property
    def depth(self) -> int: ...

    async def oldest(self, limit: int) -> list[SpooledMessage]: ...

    async def delete(self, seqs: Sequence[int]) -> None: ...

    async def wait_appended(self) -> None: ...


class RelayBroker(Protocol):
    """What the relay needs of the broker (:class:`producer.broker.ProducerBroker`)."""

    @property
    def state(self) -> BrokerState: ...

    @property
    def connected(self) -> bool: ...

    async def wait_connected(self) -> None: ...

    async def publish_spooled(
        self, messages: Sequence[OutgoingMessage], confirm_timeout: float
    ) -> list[OutgoingMessage]: ...

    def spool_empty(self) -> None: ...


class Relay:
    """Build it, then hold :meth:`running` open; on the way out it drains, then stops."""

    def __init__(
        self,
        spool: SpoolSource,
        broker: RelayBroker,
        *,
        batch_size: int,
        publish_timeout: float,
        max_backoff: float,
        initial_backoff: float = 0.1,
    ) -> None:
        self._spool = spool
        self._broker = broker
        self._batch_size = batch_size
        self._publish_timeout = publish_timeout
        self._max_backoff = max_backoff
        self._initial_backoff = initial_backoff

    @contextlib.asynccontextmanager
    async def running(self, *, drain_within: float) -> AsyncIterator[Relay]:
        """Relay in the background while inside; on the way out wait up to ``drain_within``
        seconds for an empty spool (while the broker is connected), then stop."""
        relaying = asyncio.create_task(
            supervise("spool-relay", self.run, maximum=self._max_backoff), name="spool-relay"
        )
        try:
            yield self
        finally:
            try:
                await self.drain(drain_within)
            finally:
                relaying.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await relaying

    async def run(self) -> None:
        """Drain the spool whenever it has messages and the broker is connected, until cancelled."""
        failures = 0
        while True:
            await self._broker.wait_connected()
            if self._broker.state is BrokerState.BLOCKED:
                # A resource alarm: publishes would only stall until the confirm timeout.
                failures += 1
                await asyncio.sleep(self._backoff(failures))
                continue
            try:
                batch = await self._spool.oldest(self._batch_size)
            except SpoolUnavailable as error:
                failures += 1
                log.error("relay_spool_read_failed", error=repr(error))
                await asyncio.sleep(self._backoff(failures))
                continue
            if not batch:
                self._broker.spool_empty()
                await self._spool.wait_appended()
                continue
            unconfirmed = await self._broker.publish_spooled(
                [entry.message for entry in batch], self._publish_timeout
            )
            unconfirmed_ids = {id(message) for message in unconfirmed}
            confirmed = [entry.seq for entry in batch if id(entry.message) not in unconfirmed_ids]
            try:
                await self._spool.delete(confirmed)
            except SpoolUnavailable as error:
                # They are in the queue and still in the spool: the next round sends them again
                # (a duplicate, never a loss).
                failures += 1
                log.error("relay_spool_delete_failed", error=repr(error))
                await asyncio.sleep(self._backoff(failures))
                continue
            if not unconfirmed:
                failures = 0
                log.info("relayed", messages=len(confirmed), spool_depth=self._spool.depth)
                continue
            failures += 1
            wait = self._backoff(failures)
            log.warning(
                "relay_unconfirmed",
                unconfirmed=len(unconfirmed),
                confirmed=len(confirmed),
                spool_depth=self._spool.depth,
                retry_in_s=round(wait, 2),
            )
            await asyncio.sleep(wait)

    async def drain(self, within: float) -> bool:
        """Wait up to ``within`` seconds for an empty spool; return whether it emptied."""
        deadline = asyncio.get_running_loop().time() + within
        while self._spool.depth and self._broker.connected:
            if asyncio.get_running_loop().time() >= deadline:
                break
            await asyncio.sleep(0.05)
        return self._spool.depth == 0

    def _backoff(self, failures: int) -> float:
        # The formula itself rather than tenacity: a round is not one call that fails or not. Three
        # outcomes count as a failure (broker blocked, spool unreadable, confirms missing), a fully
        # confirmed round resets the count and an empty spool waits without counting, which
        # tenacity could express only by raising for control flow. The first wait is already twice
        # the initial backoff: one failed round is no news.
        return backoff_delay(failures + 1, self._initial_backoff, self._max_backoff)
