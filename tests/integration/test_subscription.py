"""The subscription on the real broker: a prefetch re-size never leaves the consumer silent."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aio_pika
import pytest
import structlog.testing
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from aio_pika.queue import Queue

from common.amqp import connect_amqp
from common.messages import IdsMessage, decode_message
from consumer.stats import WorkerStats
from consumer.subscription import Subscription
from tests.support.services import Endpoints
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration


class Recorder:
    """An intake that acks at once and remembers what it received."""

    paused = False
    unsettled = 0

    def __init__(self) -> None:
        self.stats = WorkerStats()
        self.received: list[str] = []

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        self.stats.messages += 1
        self.stats.ids += len(decode_message(message.body).ids)
        self.received.append(message.message_id or "")
        await message.ack()


@pytest.fixture
async def connection(endpoints: Endpoints) -> AsyncIterator[AbstractRobustConnection]:
    opened = await connect_amqp(endpoints.amqp_uri, connection_name="test", deadline=10)
    try:
        yield opened
    finally:
        await opened.close()


async def publish(connection: AbstractRobustConnection, queue: str, count: int) -> set[str]:
    channel = await connection.channel()
    sent = set()
    for _ in range(count):
        message_id = uuid.uuid4().hex
        body = IdsMessage(message_id, datetime.now(UTC), [1]).encode()
        await channel.default_exchange.publish(aio_pika.Message(body, message_id=message_id), queue)
        sent.add(message_id)
    await channel.close()
    return sent


async def test_a_resize_whose_cancel_hangs_and_closes_the_channel_keeps_consuming(
    connection: AbstractRobustConnection, queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def hanging_cancel(self: Queue, consumer_tag: str, *args: Any, **kwargs: Any) -> None:
        # A Basic.Cancel whose reply waits behind a flood of deliveries; when the caller gives
        # up, aiormq closes the channel (it cannot tell the late reply from the next one).
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await self.channel.close()
            raise

    monkeypatch.setattr(Queue, "cancel", hanging_cancel)
    recorder = Recorder()
    # 1-id messages call for a larger prefetch than the start-up guess: the supervisor re-sizes.
    subscription = await Subscription.open(
        connection,
        recorder,
        queue_name=queue_name,
        max_consumers=2000,
        prefetch=None,
        watchdog_interval=600,  # the watchdog must not be what saves it
    )
    stop = asyncio.Event()
    first = subscription.prefetch
    supervisor = asyncio.create_task(subscription.supervise(stop, tick=0.1))
    try:
        with structlog.testing.capture_logs() as logs:
            sent = await publish(connection, queue_name, 30)
            await eventually(lambda: sent <= set(recorder.received), timeout=10, what="first 30")
            await eventually(
                lambda: any(e["event"] == "unsubscribe_failed" for e in logs),
                timeout=20,
                what="the resize's cancel given up",
            )
            later = await publish(connection, queue_name, 10)
            await eventually(
                lambda: later <= set(recorder.received), timeout=10, what="deliveries after it"
            )
        assert subscription.prefetch > first
    finally:
        stop.set()
        await supervisor
