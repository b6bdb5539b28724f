"""``PUBLISH_MODE=standard``: a :class:`producer.confirms.ConfirmedPublisher` on aio-pika's
public API.

One ``exchange.publish`` per message on a confirm-mode channel. Roughly half the confirmed
messages/s of the pipeline (see docs/producer.md), but no library internals: the fallback for an
aiormq or pamqp version the pipeline was not tested with. Neither aio-pika nor aiormq has a public
broker-blocked flag (aiormq's ``Connection.ready()`` only waits), so here ``blocked`` is always
false: a memory or disk alarm shows as confirm timeouts, which degrade the publisher (callbacks
spool) exactly like a stalled network path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import aio_pika
from aio_pika.abc import AbstractChannel

from common.messages import CONTENT_TYPE, OutgoingMessage
from producer.confirms import Unconfirmed, settle


class StandardPublisher:
    """One confirmed publish per message, on aio-pika's public API."""

    def __init__(self, channel: AbstractChannel, queue_name: str) -> None:
        self._exchange = channel.default_exchange
        self._queue_name = queue_name
        self._in_flight: set[asyncio.Task[object]] = set()

    @property
    def blocked(self) -> bool:
        return False  # no public flag: an alarm surfaces as confirm timeouts (module docstring)

    async def publish(
        self, messages: Sequence[OutgoingMessage], confirm_timeout: float
    ) -> Unconfirmed:
        answers = [asyncio.ensure_future(self._publish_one(message)) for message in messages]
        self._in_flight.update(answers)
        for answer in answers:
            answer.add_done_callback(self._in_flight.discard)
        return await settle(messages, answers, confirm_timeout, self._queue_name)

    async def _publish_one(self, message: OutgoingMessage) -> object:
        # Mandatory, so that a missing queue is a Return (a failure), not a silent drop that the
        # broker would still confirm; the channel answers a Return with the returned message.
        return await self._exchange.publish(
            aio_pika.Message(
                message.body,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                content_type=CONTENT_TYPE,
                message_id=message.message_id,
            ),
            routing_key=self._queue_name,
            mandatory=True,
        )

    def close(self) -> None:
        for answer in self._in_flight:
            answer.cancel()
