"""The consumer tests' brokers: the same tests run against RabbitMQ and Pub/Sub (the emulator).

A :class:`WorkBroker` gives a test what it needs of either, named after what it means rather
than how the broker does it: the services' environment, publishing work (or raw bytes), taking
the dead letters, parking a letter for ``replay-dead``, and knowing when a consumer is subscribed.
The ``work_broker`` fixture (:func:`work_broker`; the producer's tests have their own
``broker``) is parametrized ``["rabbitmq", "pubsub"]``; its Pub/Sub
side has a topology of its own per test on the session's emulator, deleted afterwards, with a
10 s ack deadline (the emulator's shortest) so that redelivery tests stay short.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import aio_pika
import httpx
import pytest
from google.api_core import exceptions

from common.amqp import Topology, declare_topology
from common.broker.pubsub_topology import PubSubTopology, ensure_topology
from common.messages import IdsMessage
from consumer.broker import Letter
from consumer.rabbitmq import amqp_letter
from tests.support.consumer_status import publish as publish_amqp
from tests.support.consumer_status import ready_count
from tests.support.ports import free_port
from tests.support.pubsub_clients import publisher_client, pull_now, subscriber_client
from tests.support.pubsub_emulator import EMULATOR_PROJECT
from tests.support.waiting import eventually

TEST_ACK_DEADLINE_S = 10
TEST_DELIVERY_ATTEMPTS = 5


@dataclass(frozen=True)
class DeadLetter:
    body: bytes
    headers: dict[str, str]  # every value as text: Pub/Sub's attributes are


class WorkBroker(Protocol):
    name: str

    def env(self, service_env: dict[str, str]) -> dict[str, str]:
        """The services' environment for this broker (``service_env`` plus its settings)."""
        ...

    async def publish(
        self, ids: list[int], *, callback_id: str = "cb", attempt: int = 0
    ) -> None: ...

    async def publish_raw(self, body: bytes) -> None: ...

    async def take_dead_letters(self) -> list[DeadLetter]:
        """The dead letters there now, removed."""
        ...

    async def put_dead(self, letter: Letter) -> None: ...

    async def subscribed(self, env: dict[str, str]) -> bool:
        """Whether a consumer started with ``env`` consumes (called until true)."""
        ...

    async def work_left(self) -> int:
        """Work messages available to consumers now (none unacked by a live consumer)."""
        ...

    async def take_work(self, count: int, timeout: float = 10) -> list[bytes]:
        """``count`` work messages' bodies, removed (waits for them up to ``timeout``)."""
        ...


class RabbitWork:
    name = "rabbitmq"

    def __init__(self, channel: aio_pika.abc.AbstractChannel, queue_name: str) -> None:
        self.channel = channel
        self.queue_name = queue_name

    def env(self, service_env: dict[str, str]) -> dict[str, str]:
        return dict(service_env)

    async def publish(self, ids: list[int], *, callback_id: str = "cb", attempt: int = 0) -> None:
        await publish_amqp(
            self.channel, self.queue_name, ids, callback_id=callback_id, attempt=attempt
        )

    async def publish_raw(self, body: bytes) -> None:
        await self.channel.default_exchange.publish(
            aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            self.queue_name,
        )

    async def take_dead_letters(self) -> list[DeadLetter]:
        dead = await self.channel.declare_queue(Topology(self.queue_name).dead, passive=True)
        letters = []
        while (message := await dead.get(no_ack=True, fail=False)) is not None:
            headers = {k: str(v) for k, v in (message.headers or {}).items()}
            letters.append(DeadLetter(message.body, headers))
        return letters

    async def put_dead(self, letter: Letter) -> None:
        await self.channel.default_exchange.publish(
            amqp_letter(letter), Topology(self.queue_name).dead
        )

    async def subscribed(self, env: dict[str, str]) -> bool:
        queue = await self.channel.declare_queue(self.queue_name, passive=True)
        return (queue.declaration_result.consumer_count or 0) > 0

    async def work_left(self) -> int:
        return await ready_count(self.channel, self.queue_name)

    async def take_work(self, count: int, timeout: float = 10) -> list[bytes]:
        queue = await self.channel.declare_queue(self.queue_name, passive=True)
        return [(await queue.get(no_ack=True, timeout=timeout)).body for _ in range(count)]


class PubSubWork:
    name = "pubsub"

    def __init__(self, host: str, queue_name: str) -> None:
        self.host = host
        self.queue_name = queue_name
        self.topology = PubSubTopology.for_queue(EMULATOR_PROJECT, queue_name)
        self.publisher = publisher_client(host)
        self.subscriber = subscriber_client(host)

    def create(self, ack_deadline_s: int = TEST_ACK_DEADLINE_S) -> None:
        ensure_topology(
            self.publisher,
            self.subscriber,
            self.topology,
            max_delivery_attempts=TEST_DELIVERY_ATTEMPTS,
            ack_deadline_s=ack_deadline_s,
        )

    def delete(self) -> None:
        for subscription in (self.topology.work_subscription, self.topology.dead_subscription):
            with contextlib.suppress(exceptions.NotFound):
                self.subscriber.delete_subscription(subscription=subscription)
        for topic in (self.topology.topic, self.topology.dead_topic):
            with contextlib.suppress(exceptions.NotFound):
                self.publisher.delete_topic(topic=topic)
        self.publisher.stop()
        self.publisher.transport.close()
        self.subscriber.close()

    def env(self, service_env: dict[str, str]) -> dict[str, str]:
        env = {
            **service_env,
            "BROKER": "pubsub",
            "PUBSUB_PROJECT_ID": EMULATOR_PROJECT,
            "PUBSUB_EMULATOR_HOST": self.host,
            "QUEUE_NAME": self.queue_name,
        }
        env.setdefault("METRICS_PORT", str(free_port()))
        return env

    async def _publish(self, topic: str, body: bytes, **attributes: str) -> None:
        future = self.publisher.publish(topic, body, **attributes)
        await asyncio.wait_for(asyncio.wrap_future(future), 10)

    async def publish(self, ids: list[int], *, callback_id: str = "cb", attempt: int = 0) -> None:
        message = IdsMessage(callback_id, datetime.now(UTC), ids, attempt)
        await self._publish(self.topology.topic, message.encode())

    async def publish_raw(self, body: bytes) -> None:
        await self._publish(self.topology.topic, body)

    def _pull(self, subscription: str, *, keep: bool) -> list[Any]:
        """What ``subscription`` holds now; acked (removed), or given back at once."""
        received = pull_now(self.subscriber, subscription, 100)
        if received and keep:
            self.subscriber.acknowledge(
                request={"subscription": subscription, "ack_ids": [r.ack_id for r in received]}
            )
        elif received:
            self.subscriber.modify_ack_deadline(
                request={
                    "subscription": subscription,
                    "ack_ids": [r.ack_id for r in received],
                    "ack_deadline_seconds": 0,
                }
            )
        return [r.message for r in received]

    async def take_dead_letters(self) -> list[DeadLetter]:
        messages = await asyncio.to_thread(self._pull, self.topology.dead_subscription, keep=True)
        return [DeadLetter(m.data, dict(m.attributes)) for m in messages]

    async def work_left(self) -> int:
        """Pub/Sub cannot count a backlog: what a pull finds now (given back at once). A
        message a stopped consumer left unacked is not found until its lease expires."""
        return len(await asyncio.to_thread(self._pull, self.topology.work_subscription, keep=False))

    async def take_work(self, count: int, timeout: float = 10) -> list[bytes]:
        bodies: list[bytes] = []

        async def enough() -> bool:
            messages = await asyncio.to_thread(
                self._pull, self.topology.work_subscription, keep=True
            )
            bodies.extend(m.data for m in messages)
            return len(bodies) >= count

        await eventually(enough, timeout=timeout, what=f"{count} work messages")
        return bodies

    async def put_dead(self, letter: Letter) -> None:
        attributes = {k: str(v) for k, v in letter.headers.items()}
        await self._publish(self.topology.dead_topic, letter.body, **attributes)

    async def subscribed(self, env: dict[str, str]) -> bool:
        """Ready by the consumer's own probe: its stream is open (and its database answers)."""
        url = f"http://127.0.0.1:{env['METRICS_PORT']}/ready"
        try:
            async with httpx.AsyncClient() as client:
                response = await client.get(url, timeout=2)
        except httpx.TransportError:
            return False
        return response.status_code == 200 and response.json()["broker"] is True


BROKERS = ["rabbitmq", "pubsub"]


@pytest.fixture(params=BROKERS)
async def work_broker(
    request: pytest.FixtureRequest,
    queue_name: str,
    amqp_connection: aio_pika.abc.AbstractConnection,
) -> AsyncIterator[RabbitWork | PubSubWork]:
    """The broker a consumer test runs on, with a topology of the test's own."""
    if request.param == "rabbitmq":
        channel = await amqp_connection.channel(publisher_confirms=True)
        await declare_topology(channel, queue_name)
        yield RabbitWork(channel, queue_name)
        return
    host: str = request.getfixturevalue("pubsub_emulator")
    work = PubSubWork(host, queue_name)
    await asyncio.to_thread(work.create)
    try:
        yield work
    finally:
        await asyncio.to_thread(work.delete)


Subscribed = Callable[[], Awaitable[bool]]
