"""The relay: moves spooled messages to the broker, oldest first, deleting each only after its
confirm. While the broker is away or refuses, it backs off (exponential, with jitter)."""

from __future__ import annotations

import asyncio

import structlog

from common.backoff import equal_jitter, exponential
from producer.publisher import BrokerState, Publisher
from producer.spool import Spool, SpoolUnavailable

log = structlog.get_logger(__name__)


class Relay:
    def __init__(
        self,
        spool: Spool,
        publisher: Publisher,
        *,
        batch_size: int,
        publish_timeout: float,
        max_backoff: float,
        initial_backoff: float = 0.1,
    ) -> None:
        self._spool = spool
        self._publisher = publisher
        self._batch_size = batch_size
        self._publish_timeout = publish_timeout
        self._max_backoff = max_backoff
        self._initial_backoff = initial_backoff
        self.relayed = 0

    async def run(self) -> None:
        """Drain the spool whenever it has messages and the broker is connected, until cancelled."""
        failures = 0
        while True:
            await self._publisher.wait_connected()
            if self._publisher.state is BrokerState.BLOCKED:
                # A resource alarm: publishes would only stall until the confirm timeout.
                failures += 1
                await asyncio.sleep(self._backoff(failures))
                continue
            # Cleared before reading: an append committed after this point sets it again.
            self._spool.appended.clear()
            try:
                batch = await self._spool.oldest(self._batch_size)
            except SpoolUnavailable as error:
                failures += 1
                log.error("relay_spool_read_failed", error=repr(error))
                await asyncio.sleep(self._backoff(failures))
                continue
            if not batch:
                # Nothing to probe the broker with: let callbacks try it directly again.
                self._publisher.recovered()
                await self._spool.appended.wait()
                continue
            unconfirmed = await self._publisher.publish(
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
            self.relayed += len(confirmed)
            if not unconfirmed:
                failures = 0
                self._publisher.recovered()
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
            if failures % 2 == 0:
                # Every second failed round: if confirms stopped arriving on a connection that
                # looks open (a stalled network path), reconnecting beats waiting for the
                # heartbeat to notice; if the broker refuses, it costs one reconnect per two
                # backoffs.
                self._publisher.reset("two relay rounds in a row unconfirmed")
            await asyncio.sleep(wait)

    async def drain(self, within: float) -> bool:
        """Wait up to ``within`` seconds for an empty spool; return whether it emptied."""
        deadline = asyncio.get_running_loop().time() + within
        while self._spool.depth and self._publisher.connected:
            if asyncio.get_running_loop().time() >= deadline:
                break
            await asyncio.sleep(0.05)
        return self._spool.depth == 0

    def _backoff(self, failures: int) -> float:
        # The first wait is already twice the initial backoff: one failed round is no news.
        return equal_jitter(exponential(failures + 1, self._initial_backoff, self._max_backoff))
