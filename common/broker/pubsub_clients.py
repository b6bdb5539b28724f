"""Google's Pub/Sub clients for the services, built from their ``PUBSUB_*`` settings.

With ``PUBSUB_EMULATOR_HOST`` the clients talk to the emulator on an insecure channel with no
credentials (as Google's own clients do when that variable is in the environment; here it may
also come from ``.env``, which Google's clients would not read). Without it they reach the service
with Application Default Credentials (``GOOGLE_APPLICATION_CREDENTIALS``, or the workload's
identity).

Their channels try to reconnect at least every :data:`MAX_RECONNECT_BACKOFF_MS` after Pub/Sub
was unreachable. gRPC's default backs off up to 120 s: after a 30 s outage the channel stayed down
some 25 s longer, long enough for the subscriber's lease extensions to give up (their 60 s retry
deadline) and end the stream.

The clients are blocking (gRPC, threads): call their methods from asyncio through
``asyncio.to_thread`` or wrap their futures (``asyncio.wrap_future``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
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

MAX_RECONNECT_BACKOFF_MS = 2000
CHANNEL_OPTIONS = (("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),)


def channel_factory(create: Callable[..., grpc.Channel]) -> Callable[..., grpc.Channel]:
    """``create`` (a transport's ``create_channel``) with :data:`CHANNEL_OPTIONS` added to the
    options the transport asks for (message sizes, keepalive)."""

    def channel(host: str, **kwargs: Any) -> grpc.Channel:
        kwargs["options"] = [*kwargs.get("options", ()), *CHANNEL_OPTIONS]
        return create(host, **kwargs)

    return channel


def _transport(kind: Any, settings: PubSubSettings) -> Any:
    """A ``kind`` (publisher or subscriber gRPC transport) whose channel has
    :data:`CHANNEL_OPTIONS`: an insecure one to the emulator, or the transport's own."""
    if settings.emulator_host:
        return kind(channel=grpc.insecure_channel(settings.emulator_host, options=CHANNEL_OPTIONS))
    return kind(channel=channel_factory(kind.create_channel))


def publisher_client(settings: PubSubSettings, **options: Any) -> pubsub_v1.PublisherClient:
    """A publisher client; ``options`` go to ``PublisherClient`` (batch and flow settings)."""
    transport = _transport(PublisherGrpcTransport, settings)
    return pubsub_v1.PublisherClient(transport=transport, **options)


def subscriber_client(settings: PubSubSettings) -> pubsub_v1.SubscriberClient:
    return pubsub_v1.SubscriberClient(transport=_transport(SubscriberGrpcTransport, settings))


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
