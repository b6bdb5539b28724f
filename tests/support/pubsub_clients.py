"""Google's Pub/Sub clients pointed at a test emulator, and names of a test's own on it.

The clients are the services' own (:mod:`common.broker.pubsub_clients`: an explicit insecure
channel rather than ``PUBSUB_EMULATOR_HOST``), so one test process can talk to more than one
emulator without touching its environment.
"""

from __future__ import annotations

import contextlib
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from google.api_core import exceptions
from google.cloud import pubsub_v1

from common.broker.pubsub_clients import publisher_client as services_publisher_client
from common.broker.pubsub_clients import subscriber_client as services_subscriber_client
from common.broker.pubsub_topology import PubSubSettings
from tests.support.pubsub_emulator import EMULATOR_PROJECT


def publisher_client(host: str, **options: Any) -> pubsub_v1.PublisherClient:
    return services_publisher_client(PubSubSettings(EMULATOR_PROJECT, host), **options)


def subscriber_client(host: str) -> pubsub_v1.SubscriberClient:
    return services_subscriber_client(PubSubSettings(EMULATOR_PROJECT, host))


def pull_now(
    subscriber: pubsub_v1.SubscriberClient, subscription: str, max_messages: int
) -> list[Any]:
    """What ``subscription`` holds now (``ReceivedMessage``s, not acked). ``return_immediately``
    is deprecated for the service, where an empty answer may miss messages; the emulator answers
    it at once with whatever the subscription holds. Without it the emulator holds an empty pull
    until a second before its deadline (4 s of a 5 s one, measured)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        response = subscriber.pull(
            request={
                "subscription": subscription,
                "max_messages": max_messages,
                "return_immediately": True,
            },
            timeout=5,
        )
    return list(response.received_messages)


@dataclass
class EmulatorNames:
    """Topics and subscriptions named for one test, deleted when it ends."""

    publisher: pubsub_v1.PublisherClient
    subscriber: pubsub_v1.SubscriberClient
    prefix: str = field(default_factory=lambda: f"lastseen-test-{uuid.uuid4().hex[:8]}")
    topics: list[str] = field(default_factory=list)
    subscriptions: list[str] = field(default_factory=list)

    def topic(self, suffix: str = "topic") -> str:
        path = self.publisher.topic_path(EMULATOR_PROJECT, f"{self.prefix}-{suffix}")
        self.publisher.create_topic(name=path)
        self.topics.append(path)
        return path

    def subscription(self, topic: str, suffix: str = "sub", **settings: Any) -> str:
        path = self.subscriber.subscription_path(EMULATOR_PROJECT, f"{self.prefix}-{suffix}")
        self.subscriber.create_subscription(request={"name": path, "topic": topic, **settings})
        self.subscriptions.append(path)
        return path

    def delete_all(self) -> None:
        for subscription in self.subscriptions:
            with contextlib.suppress(exceptions.NotFound):
                self.subscriber.delete_subscription(subscription=subscription)
        for topic in self.topics:
            with contextlib.suppress(exceptions.NotFound):
                self.publisher.delete_topic(topic=topic)


@contextlib.contextmanager
def emulator_names(host: str, **publisher_options: Any) -> Iterator[EmulatorNames]:
    publisher = publisher_client(host, **publisher_options)
    subscriber = subscriber_client(host)
    names = EmulatorNames(publisher, subscriber)
    try:
        yield names
    finally:
        names.delete_all()
        publisher.stop()
        publisher.transport.close()
        subscriber.close()
