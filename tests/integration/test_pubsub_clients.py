"""The services' Pub/Sub clients against the real emulator: built from the settings alone (no
``PUBSUB_EMULATOR_HOST`` in the environment), they create the topology and carry a message."""

from __future__ import annotations

import os
import uuid

import pytest

from common.broker.pubsub_clients import ensure, publisher_client, subscriber_client
from common.broker.pubsub_topology import PubSubSettings, PubSubTopology
from tests.support.pubsub_emulator import EMULATOR_PROJECT

pytestmark = pytest.mark.integration


async def test_clients_from_settings_create_the_topology_and_carry_a_message(
    pubsub_emulator: str,
) -> None:
    assert "PUBSUB_EMULATOR_HOST" not in os.environ
    settings = PubSubSettings(EMULATOR_PROJECT, pubsub_emulator)
    topology = PubSubTopology.for_queue(EMULATOR_PROJECT, f"clients-{uuid.uuid4().hex[:8]}")
    await ensure(settings, topology, max_delivery_attempts=5)
    await ensure(settings, topology, max_delivery_attempts=5)  # idempotent
    publisher, subscriber = publisher_client(settings), subscriber_client(settings)
    try:
        message_id = publisher.publish(topology.topic, b"hello").result(timeout=30)
        answer = subscriber.pull(
            subscription=topology.work_subscription, max_messages=1, timeout=30
        )
        assert [m.message.message_id for m in answer.received_messages] == [message_id]
        assert answer.received_messages[0].message.data == b"hello"
        subscriber.acknowledge(
            subscription=topology.work_subscription,
            ack_ids=[m.ack_id for m in answer.received_messages],
        )
    finally:
        for subscription in (topology.work_subscription, topology.dead_subscription):
            subscriber.delete_subscription(subscription=subscription)
        for topic in (topology.topic, topology.dead_topic):
            publisher.delete_topic(topic=topic)
        publisher.transport.close()
        subscriber.close()
