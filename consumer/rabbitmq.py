"""The consumer on RabbitMQ (:mod:`consumer.broker`'s first implementation).

Work arrives from the quorum queue ``q`` through :class:`consumer.subscription.Subscription`
(prefetch sizing, re-subscribing, the watchdog). A retry is published to the delay queue of its
backoff tier with the jittered delay as its own expiration (:mod:`consumer.backoff`); it returns
to ``q`` when it expires. Dead letters go to ``q.dead`` with the letter's headers. Every publish
is mandatory and confirmed; a broker failure on the way is :class:`HandOffFailed`.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from common.amqp import SETTLE_ERRORS, Topology, cancelled_by_broker, connect_amqp, declare_topology
from common.messages import CONTENT_TYPE, IdsMessage
from consumer.backoff import RetryPlan
from consumer.broker import HandOffFailed, Intake, Letter
from consumer.retry import retry_message
from consumer.subscription import Subscription

log = structlog.get_logger(__name__)

PUBLISH_TIMEOUT = 10.0


def amqp_letter(letter: Letter) -> aio_pika.Message:
    """A dead letter as a persistent AMQP message, its headers as message headers."""
    return aio_pika.Message(
        letter.body,
        headers=dict(letter.headers),
        content_type=CONTENT_TYPE,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


class RabbitHandOff:
    def __init__(self, channel: AbstractChannel, topology: Topology) -> None:
        self._channel = channel
        self._topology = topology

    async def retry(self, work: IdsMessage, plan: RetryPlan) -> None:
        message = retry_message(work, plan.expiration_ms)
        await self._publish(message, self._topology.retry(plan.tier_ms))

    async def dead_letter(self, letter: Letter) -> None:
        await self._publish(amqp_letter(letter), self._topology.dead)

    async def _publish(self, message: aio_pika.Message, routing_key: str) -> None:
        try:
            # mandatory + on_return_raises: a message no queue takes is an error, not a drop.
            await self._channel.default_exchange.publish(
                message, routing_key, mandatory=True, timeout=PUBLISH_TIMEOUT
            )
        except SETTLE_ERRORS as error:
            if not cancelled_by_broker(error):
                raise
            raise HandOffFailed(repr(error)) from error


class RabbitBroker:
    """A robust connection, a confirming channel for the hand-off, and subscriptions on it."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        publish_channel: AbstractChannel,
        *,
        queue_name: str,
        max_consumers: int,
        prefetch: int | None,
        watchdog_interval: float,
        label: str,
    ) -> None:
        self._connection = connection
        self._queue_name = queue_name
        self._max_consumers = max_consumers
        self._prefetch = prefetch
        self._watchdog_interval = watchdog_interval
        self.label = label
        self.hand_off = RabbitHandOff(publish_channel, Topology(queue_name))

    def connected(self) -> bool:
        return self._connection.connected.is_set()

    async def subscribe(self, intake: Intake) -> Subscription:
        return await Subscription.open(
            self._connection,
            intake,
            queue_name=self._queue_name,
            max_consumers=self._max_consumers,
            prefetch=self._prefetch,
            watchdog_interval=self._watchdog_interval,
        )


@contextlib.asynccontextmanager
async def open_rabbitmq(
    uri: str,
    *,
    ssl_context: ssl.SSLContext | None,
    startup_timeout: float,
    label: str,
    queue_name: str,
    retry_tiers_ms: tuple[int, ...],
    max_consumers: int,
    prefetch: int | None,
    watchdog_interval: float,
) -> AsyncIterator[RabbitBroker]:
    """Connect (with backoff, up to ``startup_timeout``), declare the topology with the delay
    queues of ``retry_tiers_ms``, and close the connection at the end."""
    connection = await connect_amqp(
        uri,
        connection_name="lastseen-consumer",
        deadline=startup_timeout,
        ssl_context=ssl_context,
    )
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await declare_topology(channel, queue_name, retry_delays_ms=retry_tiers_ms)
        log.info("topology_declared", queue=queue_name, retry_tiers_ms=list(retry_tiers_ms))
        yield RabbitBroker(
            connection,
            channel,
            queue_name=queue_name,
            max_consumers=max_consumers,
            prefetch=prefetch,
            watchdog_interval=watchdog_interval,
            label=label,
        )
    finally:
        await connection.close()
