"""The subscription on the real brokers: a RabbitMQ prefetch re-size never leaves the consumer
silent; on each broker (the ``work_broker`` fixture), deliveries stop at ``cancel()`` while
what was delivered can still be acked."""

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
from consumer.broker import Message
from consumer.service import open_broker
from consumer.stats import WorkerStats
from consumer.subscription import Subscription
from tests.support.consumer_brokers import WorkBroker, work_broker
from tests.support.consumer_status import consumer_settings
from tests.support.services import Endpoints
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration
__all__ = ["work_broker"]  # the fixture, imported


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


class Holder:
    """An intake that holds what it receives (acks it when told)."""

    paused = False
    unsettled = 0

    def __init__(self) -> None:
        self.stats = WorkerStats()
        self.held: list[Message] = []

    async def on_message(self, message: Message) -> None:
        self.held.append(message)

    @property
    def callbacks(self) -> set[str]:
        return {decode_message(m.body).callback_id for m in self.held}


async def test_deliveries_stop_at_cancel_and_what_was_delivered_is_still_acked(
    work_broker: WorkBroker, service_env: dict[str, str]
) -> None:
    """The shutdown's contract, on each broker: after ``cancel()`` nothing more reaches the
    intake, the messages it holds can still be acked, and what it never saw stays for others.
    (Pub/Sub: at once when it reached the consumer, which nacks it at close; one to three ack
    deadlines later, measured 10-30 s on a 10 s subscription, when it was still on its way in
    the stream that closed.)"""
    env = work_broker.env(
        {**service_env, "TESTER_ENDPOINT": "http://127.0.0.1:9", "PREFETCH": "20"}
    )
    holder = Holder()
    async with open_broker(consumer_settings(env)) as opened:
        subscription = await opened.subscribe(holder)
        for n in range(5):
            await work_broker.publish([n], callback_id=f"before-{n}")
        await eventually(lambda: len(holder.held) == 5, timeout=20, what="five delivered")
        await subscription.cancel()
        for n in range(3):
            await work_broker.publish([n], callback_id=f"after-{n}")
        for message in holder.held:
            await message.ack()
    assert holder.callbacks == {f"before-{n}" for n in range(5)}
    left = {decode_message(body).callback_id for body in await work_broker.take_work(3, timeout=45)}
    assert left == {f"after-{n}" for n in range(3)}
    assert await work_broker.work_left() == 0
