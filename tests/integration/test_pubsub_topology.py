"""The Pub/Sub topology against Google's emulator: created when missing, idempotent, any order."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
from google.api_core import exceptions
from google.pubsub_v1 import ReceivedMessage

from common.broker.pubsub_topology import PubSubTopology, ensure_topology
from tests.support.pubsub_clients import EmulatorNames, emulator_names
from tests.support.pubsub_emulator import EMULATOR_PROJECT

pytestmark = pytest.mark.integration


@pytest.fixture
def clients(pubsub_emulator: str) -> Iterator[EmulatorNames]:
    with emulator_names(pubsub_emulator) as names:
        yield names


@pytest.fixture
def topology(clients: EmulatorNames) -> Iterator[PubSubTopology]:
    topology = PubSubTopology.for_queue(EMULATOR_PROJECT, f"lastseen-{uuid.uuid4().hex[:8]}")
    yield topology
    clients.subscriptions += [topology.work_subscription, topology.dead_subscription]
    clients.topics += [topology.topic, topology.dead_topic]  # deleted by the fixture


def ensure(clients: EmulatorNames, topology: PubSubTopology) -> None:
    ensure_topology(clients.publisher, clients.subscriber, topology, max_delivery_attempts=5)


def test_creates_what_is_missing_and_again_changes_nothing(
    clients: EmulatorNames, topology: PubSubTopology
) -> None:
    ensure(clients, topology)
    ensure(clients, topology)

    work = clients.subscriber.get_subscription(subscription=topology.work_subscription)
    assert work.topic == topology.topic
    assert work.dead_letter_policy.dead_letter_topic == topology.dead_topic
    assert work.dead_letter_policy.max_delivery_attempts == 5
    dead = clients.subscriber.get_subscription(subscription=topology.dead_subscription)
    assert dead.topic == topology.dead_topic


def test_services_starting_together_all_succeed(
    clients: EmulatorNames, topology: PubSubTopology
) -> None:
    failures: list[BaseException] = []

    def start() -> None:
        try:
            ensure(clients, topology)
        except Exception as error:
            failures.append(error)

    services = [threading.Thread(target=start) for _ in range(4)]
    for service in services:
        service.start()
    for service in services:
        service.join(timeout=30)

    assert failures == []
    clients.subscriber.get_subscription(subscription=topology.work_subscription)


def test_a_half_made_topology_is_completed(
    clients: EmulatorNames, topology: PubSubTopology
) -> None:
    """A service that died after creating the topic alone: the next start creates the rest."""
    clients.publisher.create_topic(name=topology.topic)

    ensure(clients, topology)

    clients.subscriber.get_subscription(subscription=topology.dead_subscription)
    with pytest.raises(exceptions.AlreadyExists):
        clients.publisher.create_topic(name=topology.dead_topic)


def test_a_message_that_keeps_failing_reaches_the_dead_subscription(
    clients: EmulatorNames, topology: PubSubTopology
) -> None:
    ensure(clients, topology)
    clients.publisher.publish(topology.topic, b"poison").result(timeout=10)

    def pull(subscription: str, wait_s: float) -> list[ReceivedMessage]:
        request = {"subscription": subscription, "max_messages": 10}
        return list(clients.subscriber.pull(request=request, timeout=wait_s).received_messages)

    for attempt in range(1, 6):
        [message] = pull(topology.work_subscription, 10)
        assert message.delivery_attempt == attempt
        clients.subscriber.modify_ack_deadline(
            request={
                "subscription": topology.work_subscription,
                "ack_ids": [message.ack_id],
                "ack_deadline_seconds": 0,
            }
        )
    # the emulator moves a dead letter on the subscription's next pull (docs/pubsub.md)
    assert pull(topology.work_subscription, 2) == []
    [dead] = pull(topology.dead_subscription, 10)
    assert dead.message.data == b"poison"
