"""The producer's tests, once per broker: what a producer needs to reach it (directly or through a
proxy the test cuts), and what it received, taken out as the consumers would take it.

The test side of :class:`producer.broker.ProducerBroker`: each test that takes the ``broker``
fixture (tests/conftest.py) runs against RabbitMQ and against Google's Pub/Sub emulator, with a
queue (or topic and subscriptions) of its own, deleted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import aio_pika
import pytest
from google.api_core import exceptions
from google.cloud import pubsub_v1

from common.broker.pubsub_topology import PubSubTopology
from common.messages import IdsMessage, decode_message
from producer.confirms import PublishMode
from producer.pubsub_publisher import MESSAGE_ID_ATTRIBUTE
from tests.support.amqp import amqp_uri_via
from tests.support.proxy import TcpProxy
from tests.support.pubsub_clients import publisher_client, pull_now, subscriber_client
from tests.support.pubsub_emulator import EMULATOR_PROJECT
from tests.support.waiting import eventually

BROKERS = ("rabbitmq", "pubsub")

every_broker_and_mode = pytest.mark.parametrize(
    ("broker", "publish_mode"),
    [
        pytest.param("rabbitmq", PublishMode.PIPELINE, id="rabbitmq-pipeline"),
        pytest.param("rabbitmq", PublishMode.STANDARD, id="rabbitmq-standard"),
        # PUBLISH_MODE is RabbitMQ's; with Pub/Sub it changes nothing, so it runs once.
        pytest.param("pubsub", PublishMode.PIPELINE, id="pubsub"),
    ],
    indirect=["broker"],
)
"""For tests that ran once per ``PUBLISH_MODE``: each RabbitMQ mode, and Pub/Sub."""


class BrokerUnderTest(Protocol):
    name: str
    ordered: bool
    """Whether the broker keeps publish order (Pub/Sub without ordering keys does not)."""

    @property
    def host_port(self) -> tuple[str, int]:
        """Where the broker listens, for a :class:`TcpProxy` in front of it."""
        ...

    def settings(self, via: TcpProxy | None = None) -> dict[str, Any]:
        """``ProducerSettings`` keywords that reach the broker (through ``via`` if given)."""
        ...

    def env(self, via: TcpProxy | None = None) -> dict[str, str]:
        """The same as environment variables, for ``python -m producer``."""
        ...

    async def taken(self) -> list[IdsMessage]:
        """Every message the broker holds for the consumers now, removed from it."""
        ...


async def taken_until(broker: BrokerUnderTest, expected: set[int], timeout: float) -> list[int]:
    """Take messages until every expected id arrived; return all ids taken."""
    ids: list[int] = []

    async def complete() -> bool:
        ids.extend(i for message in await broker.taken() for i in message.ids)
        return expected <= set(ids)

    await eventually(complete, timeout=timeout, interval=0.2, what="every id received")
    return ids


@dataclass
class RabbitBroker:
    amqp_uri: str
    queue_name: str
    connection: aio_pika.abc.AbstractConnection
    name: str = "rabbitmq"
    ordered: bool = True

    @property
    def host_port(self) -> tuple[str, int]:
        url = aio_pika.connection.make_url(self.amqp_uri)
        return url.host or "127.0.0.1", url.port or 5672

    def settings(self, via: TcpProxy | None = None) -> dict[str, Any]:
        uri = self.amqp_uri if via is None else amqp_uri_via(self.amqp_uri, via)
        return {"amqp_uri": uri, "queue_name": self.queue_name}

    def env(self, via: TcpProxy | None = None) -> dict[str, str]:
        return {key.upper(): str(value) for key, value in self.settings(via).items()}

    async def taken(self) -> list[IdsMessage]:
        channel = await self.connection.channel()
        try:
            work = await channel.declare_queue(self.queue_name, passive=True)
            found = []
            while (message := await work.get(no_ack=True, fail=False)) is not None:
                assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
                assert message.content_type == "application/json"
                found.append(decode_message(message.body))
            return found
        finally:
            await channel.close()


@dataclass
class PubSubBroker:
    emulator_host: str
    queue_name: str
    subscriber: pubsub_v1.SubscriberClient
    name: str = "pubsub"
    ordered: bool = False

    @property
    def topology(self) -> PubSubTopology:
        return PubSubTopology.for_queue(EMULATOR_PROJECT, self.queue_name)

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.emulator_host.rpartition(":")
        return host, int(port)

    def settings(self, via: TcpProxy | None = None) -> dict[str, Any]:
        host = self.emulator_host if via is None else f"127.0.0.1:{via.port}"
        return {
            "broker": "pubsub",
            "pubsub_project_id": EMULATOR_PROJECT,
            "pubsub_emulator_host": host,
            "queue_name": self.queue_name,
        }

    def env(self, via: TcpProxy | None = None) -> dict[str, str]:
        return {key.upper(): str(value) for key, value in self.settings(via).items()}

    async def taken(self) -> list[IdsMessage]:
        """Pull the work subscription dry and ack what came; each message must carry its
        ``message_id`` attribute, naming the callback its body belongs to."""
        return await asyncio.to_thread(self._pull_all)

    def _pull_all(self) -> list[IdsMessage]:
        found: list[IdsMessage] = []
        subscription = self.topology.work_subscription
        while True:
            try:
                received_messages = pull_now(self.subscriber, subscription, 1000)
            except exceptions.NotFound:  # not created yet: nothing published
                return found
            if not received_messages:
                return found
            for received in received_messages:
                body = decode_message(received.message.data)
                message_id = received.message.attributes[MESSAGE_ID_ATTRIBUTE]
                assert message_id.startswith(f"{body.callback_id}."), message_id
                found.append(body)
            self.subscriber.acknowledge(
                request={
                    "subscription": subscription,
                    "ack_ids": [r.ack_id for r in received_messages],
                }
            )

    def delete_topology(self) -> None:
        topology = self.topology
        publisher = publisher_client(self.emulator_host)
        try:
            for subscription in (topology.work_subscription, topology.dead_subscription):
                with contextlib.suppress(exceptions.NotFound):
                    self.subscriber.delete_subscription(subscription=subscription)
            for topic in (topology.topic, topology.dead_topic):
                with contextlib.suppress(exceptions.NotFound):
                    publisher.delete_topic(topic=topic)
        finally:
            publisher.transport.close()


@contextlib.contextmanager
def pubsub_broker(emulator_host: str, queue_name: str) -> Iterator[PubSubBroker]:
    subscriber = subscriber_client(emulator_host)
    broker = PubSubBroker(emulator_host, queue_name, subscriber)
    try:
        yield broker
    finally:
        broker.delete_topology()
        subscriber.close()
