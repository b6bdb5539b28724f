"""Google's Pub/Sub clients for the services, built from their ``PUBSUB_*`` settings.

With ``PUBSUB_EMULATOR_HOST`` the clients talk to the emulator on an insecure channel with no
credentials (as Google's own clients do when that variable is in the environment; here it may
also come from ``.env``, which Google's clients would not read). Without it they reach the service
with Application Default Credentials (``GOOGLE_APPLICATION_CREDENTIALS``, or the workload's
identity).

The clients are blocking (gRPC, threads): call their methods from asyncio through
``asyncio.to_thread`` or wrap their futures (``asyncio.wrap_future``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from google.cloud import pubsub_v1
from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport
from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

from common.broker.pubsub_topology import (
    DELIVERY_ATTEMPTS,
    PubSubSettings,
    PubSubTopology,
    ensure_topology,
)


def publisher_client(settings: PubSubSettings, **options: Any) -> pubsub_v1.PublisherClient:
    """A publisher client; ``options`` go to ``PublisherClient`` (batch and flow settings)."""
    if settings.emulator_host:
        transport = PublisherGrpcTransport(channel=grpc.insecure_channel(settings.emulator_host))
        return pubsub_v1.PublisherClient(transport=transport, **options)
    return pubsub_v1.PublisherClient(**options)


def subscriber_client(settings: PubSubSettings) -> pubsub_v1.SubscriberClient:
    if settings.emulator_host:
        transport = SubscriberGrpcTransport(channel=grpc.insecure_channel(settings.emulator_host))
        return pubsub_v1.SubscriberClient(transport=transport)
    return pubsub_v1.SubscriberClient()


async def ensure(
    settings: PubSubSettings,
    topology: PubSubTopology,
    *,
    max_delivery_attempts: int = DELIVERY_ATTEMPTS,
    ack_deadline_s: int = 60,
    call_timeout: float | None = None,
) -> None:
    """Create whatever of ``topology`` is missing (idempotent, any start order), off the loop;
    ``call_timeout`` bounds each call (:func:`~common.broker.pubsub_topology.ensure_topology`)."""

    def create() -> None:
        publisher, subscriber = publisher_client(settings), subscriber_client(settings)
        try:
            ensure_topology(
                publisher,
                subscriber,
                topology,
                max_delivery_attempts=max_delivery_attempts,
                ack_deadline_s=ack_deadline_s,
                call_timeout=call_timeout,
            )
        finally:
            publisher.transport.close()
            subscriber.close()

    await asyncio.to_thread(create)
