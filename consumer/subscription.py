"""RabbitMQ's subscription to the work queue: prefetch sizing, re-subscribing, and the watchdog.

RabbitMQ limits unacked messages per consumer (``basic.qos``; quorum queues refuse the
per-channel variant), and a new limit only applies to consumers started after it. So the consumer
re-subscribes when the ids per message it sees call for a different prefetch, and when the
watchdog finds it connected but idle while its queue holds messages.
"""

from __future__ import annotations

import asyncio
import math
import time

import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from common.amqp import AMQP_ERRORS, RECONNECTING_ERRORS, declare_topology
from consumer.broker import Intake

log = structlog.get_logger(__name__)

ASSUMED_IDS_PER_MESSAGE = 100
# Messages stay unacked until their slowest id answers (and commits), while their other ids no
# longer occupy a lookup: keep more ids at hand than can be in flight.
HEADROOM = 2.5
MIN_PREFETCH, MAX_PREFETCH = 4, 65_535


def prefetch_for(max_consumers: int, ids_per_message: float) -> int:
    """Unacked messages that keep ``max_consumers`` lookups busy at this message size."""
    wanted = math.ceil(HEADROOM * max_consumers / max(ids_per_message, 1.0))
    return max(MIN_PREFETCH, min(MAX_PREFETCH, wanted))


def needs_resize(current: int, target: int) -> bool:
    """Re-subscribing costs a round trip and briefly doubles the unacked allowance: only for a
    change of more than half."""
    return target > current * 1.5 or target < current / 1.5


WATCHDOG_TIMEOUT = 10.0
# Cancelling the subscription at shutdown comes out of SHUTDOWN_GRACE: keep it short.
CANCEL_TIMEOUT = 2.0


def looks_stuck(idle: float, interval: float, paused: bool, unacked: int, prefetch: int) -> bool:
    """Whether silence is suspicious: nothing arrived for ``interval`` although the consumer has
    room for more and is not pausing on purpose (then the queue's depth decides)."""
    return idle >= interval and not paused and unacked < prefetch


class Subscription:
    """Consumes the work queue on a channel of its own; see the module docstring.

    ``await Subscription.open(...)`` returns one that is consuming. ``prefetch`` None: sized from
    ``max_consumers`` and the ids per message seen so far."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        intake: Intake,
        channel: AbstractChannel,
        queue: AbstractQueue,
        *,
        max_consumers: int,
        prefetch: int | None,
        watchdog_interval: float,
    ) -> None:
        self._connection = connection
        self._intake = intake
        self._channel = channel
        self._queue = queue
        self._max_consumers = max_consumers
        self._watchdog_interval = watchdog_interval
        self._fixed = prefetch is not None
        self.prefetch = prefetch or prefetch_for(max_consumers, ASSUMED_IDS_PER_MESSAGE)
        self._tag: str | None = None
        self._last_delivery_at = time.monotonic()

    @classmethod
    async def open(
        cls,
        connection: AbstractRobustConnection,
        intake: Intake,
        *,
        queue_name: str,
        max_consumers: int,
        prefetch: int | None,
        watchdog_interval: float,
    ) -> Subscription:
        """Open a channel, (re)declare the queue, and consume: a subscription that is running."""
        channel, queue = await _declared(connection, queue_name)
        subscription = cls(
            connection,
            intake,
            channel,
            queue,
            max_consumers=max_consumers,
            prefetch=prefetch,
            watchdog_interval=watchdog_interval,
        )
        try:
            await subscription._consume()
        except BaseException:
            await channel.close()
            raise
        return subscription

    async def _deliver(self, message: AbstractIncomingMessage) -> None:
        self._last_delivery_at = time.monotonic()
        await self._intake.on_message(message)

    async def _consume(self) -> None:
        await self._channel.set_qos(prefetch_count=self.prefetch)
        self._tag = await self._queue.consume(self._deliver)
        log.info("subscribed", queue=self._queue.name, prefetch=self.prefetch)

    async def cancel(self) -> None:
        """Stop deliveries; what was delivered stays unacked on the channel, to be acked."""
        if self._tag is None:
            return
        tag, self._tag = self._tag, None
        if not self._connection.connected.is_set():
            return  # nothing is delivered on a broken connection; waiting would eat the grace
        try:
            async with asyncio.timeout(CANCEL_TIMEOUT):
                await self._queue.cancel(tag)
        except AMQP_ERRORS as error:
            log.warning("unsubscribe_failed", error=repr(error))

    async def _resize(self) -> None:
        stats = self._intake.stats
        if self._fixed or stats.messages < 20:
            return
        target = prefetch_for(self._max_consumers, stats.ids_per_message)
        if not needs_resize(self.prefetch, target):
            return
        self.prefetch = target
        # Same channel, so the messages in process stay unacked on it and can still be acked.
        # The new consumer comes first (deliveries never stop); then the old one is retired. Its
        # cancel may wait behind a flood of deliveries: it gets the watchdog's time, not the
        # shutdown's, and if it fails the channel may be gone (aiormq closes a channel whose RPC
        # was abandoned), so the subscription moves to a fresh one instead of staying silent.
        old, queue = self._tag, self._queue
        await self._consume()
        log.info("prefetch_resized", prefetch=target)
        if old is None:
            return
        try:
            async with asyncio.timeout(WATCHDOG_TIMEOUT):
                await queue.cancel(old)
        except AMQP_ERRORS as error:
            log.warning("unsubscribe_failed", error=repr(error), during="prefetch resize")
            async with asyncio.timeout(WATCHDOG_TIMEOUT):
                await self._reopen()

    async def _reopen(self) -> None:
        """A new channel and consumer. The old channel may be stuck (that is why we are here):
        closing it returns its unacked messages to the queue, and their acks fail harmlessly."""
        self._tag = None
        try:
            async with asyncio.timeout(WATCHDOG_TIMEOUT):
                await self._channel.close()
        except AMQP_ERRORS as error:
            log.warning("old_channel_close_failed", error=repr(error))
        self._channel, self._queue = await _declared(self._connection, self._queue.name)
        await self._consume()

    async def supervise(self, stop: asyncio.Event, tick: float = 1.0) -> None:
        """Until ``stop``: resize the prefetch to the message size seen, and re-subscribe when
        nothing arrives for ``WATCHDOG_INTERVAL`` while the queue has messages ready."""
        interval = self._watchdog_interval
        next_watch = time.monotonic() + interval
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), tick)
                return
            except TimeoutError:
                pass
            try:
                await self._resize()
                if time.monotonic() >= next_watch:
                    next_watch = time.monotonic() + interval
                    await self._watch(interval)
            except RECONNECTING_ERRORS as error:
                # The broker is away: the robust connection restores the subscription itself.
                log.warning("supervise_failed", error=repr(error))

    async def _watch(self, interval: float) -> None:
        if not self._connection.connected.is_set():
            return  # reconnecting: the robust connection restores the subscription itself
        intake = self._intake
        idle = time.monotonic() - self._last_delivery_at
        if not looks_stuck(idle, interval, intake.paused, intake.unsettled, self.prefetch):
            return
        # On a channel of its own: the consuming one may be the stuck part.
        async with asyncio.timeout(WATCHDOG_TIMEOUT):
            probe = await self._connection.channel()
            try:
                declared = await probe.declare_queue(self._queue.name, passive=True)
            finally:
                await probe.close()
        ready = declared.declaration_result.message_count or 0
        if ready > 0:
            log.warning("watchdog_idle_with_ready_messages", idle_s=round(idle, 1), ready=ready)
            async with asyncio.timeout(WATCHDOG_TIMEOUT):
                await self._reopen()
            self._last_delivery_at = time.monotonic()


async def _declared(
    connection: AbstractRobustConnection, queue_name: str
) -> tuple[AbstractChannel, AbstractQueue]:
    """A new channel with the topology (re)declared on it, and the work queue."""
    channel = await connection.channel()
    try:
        return channel, await declare_topology(channel, queue_name)
    except BaseException:
        await channel.close()
        raise
