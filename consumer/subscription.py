"""The subscription to the work queue: prefetch sizing, re-subscribing, and the watchdog.

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
from aio_pika.abc import AbstractChannel, AbstractQueue, AbstractRobustConnection

from common.amqp import AMQP_ERRORS, RECONNECTING_ERRORS, declare_topology
from consumer.settings import ConsumerSettings
from consumer.worker import Worker

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
    """Consumes the work queue on a channel of its own; see the module docstring."""

    def __init__(
        self, connection: AbstractRobustConnection, worker: Worker, settings: ConsumerSettings
    ) -> None:
        self._connection = connection
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._worker = worker
        self._settings = settings
        self._fixed = settings.prefetch is not None
        self.prefetch = settings.prefetch or prefetch_for(
            settings.max_consumers, ASSUMED_IDS_PER_MESSAGE
        )
        self._tag: str | None = None

    async def start(self) -> None:
        """Open a channel, (re)declare the queue, and consume."""
        self._channel = await self._connection.channel()
        self._queue = await declare_topology(self._channel, self._settings.queue_name)
        await self._consume()

    async def _consume(self) -> None:
        assert self._channel is not None and self._queue is not None
        await self._channel.set_qos(prefetch_count=self.prefetch)
        self._tag = await self._queue.consume(self._worker.on_message)
        log.info("subscribed", queue=self._queue.name, prefetch=self.prefetch)

    async def cancel(self) -> None:
        """Stop deliveries; what was delivered stays unacked on the channel, to be acked."""
        if self._tag is None or self._queue is None:
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
        stats = self._worker.stats
        if self._fixed or stats["messages"] < 20:
            return
        target = prefetch_for(self._settings.max_consumers, stats["ids"] / stats["messages"])
        if needs_resize(self.prefetch, target):
            self.prefetch = target
            # Same channel: the messages in process stay unacked on it and can still be acked.
            await self.cancel()
            log.info("prefetch_resized", prefetch=target)
            await self._consume()

    async def _reopen(self) -> None:
        """A new channel and consumer. The old channel may be stuck (that is why we are here):
        closing it returns its unacked messages to the queue, and their acks fail harmlessly."""
        old = self._channel
        self._tag = None
        if old is not None:
            try:
                async with asyncio.timeout(WATCHDOG_TIMEOUT):
                    await old.close()
            except AMQP_ERRORS as error:
                log.warning("old_channel_close_failed", error=repr(error))
        await self.start()

    async def supervise(self, stop: asyncio.Event, tick: float = 1.0) -> None:
        """Until ``stop``: resize the prefetch to the message size seen, and re-subscribe when
        nothing arrives for ``WATCHDOG_INTERVAL`` while the queue has messages ready."""
        interval = self._settings.watchdog_interval
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
        worker = self._worker
        idle = time.monotonic() - worker.last_delivery_at
        if not looks_stuck(idle, interval, worker.paused, len(worker.in_process), self.prefetch):
            return
        # On a channel of its own: the consuming one may be the stuck part.
        async with asyncio.timeout(WATCHDOG_TIMEOUT):
            probe = await self._connection.channel()
            try:
                declared = await probe.declare_queue(self._settings.queue_name, passive=True)
            finally:
                await probe.close()
        ready = declared.declaration_result.message_count or 0
        if ready > 0:
            log.warning("watchdog_idle_with_ready_messages", idle_s=round(idle, 1), ready=ready)
            async with asyncio.timeout(WATCHDOG_TIMEOUT):
                await self._reopen()
            worker.last_delivery_at = time.monotonic()
