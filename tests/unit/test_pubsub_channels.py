"""The services' Pub/Sub channels reconnect within seconds of an outage's end: gRPC's own backoff
grows to 120 s, long enough that the subscriber gave its stream up (see
common.broker.pubsub_clients). Checked on the service's path (credentials from the environment),
where the transport builds the channel, and on the emulator's, where we do."""

from __future__ import annotations

from typing import Any

import google.auth
import grpc
import pytest
from google.auth.credentials import AnonymousCredentials
from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport
from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

from common.broker import pubsub_clients
from common.broker.pubsub_clients import (
    MAX_RECONNECT_BACKOFF_MS,
    publisher_client,
    subscriber_client,
)
from common.broker.pubsub_topology import PubSubSettings

pytestmark = pytest.mark.unit

BACKOFF = ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS)


def test_the_backoff_is_seconds_not_gRPCs_two_minutes() -> None:
    assert 500 <= MAX_RECONNECT_BACKOFF_MS <= 5000


def test_the_services_channels_keep_the_transports_options_and_add_the_backoff(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(google.auth, "default", lambda **_: (AnonymousCredentials(), "p"))
    asked: list[tuple[str, list[tuple[str, Any]]]] = []

    def recording(transport: type) -> Any:
        def create_channel(host: str, **kwargs: Any) -> grpc.Channel:
            asked.append((transport.__name__, list(kwargs["options"])))
            return grpc.insecure_channel("127.0.0.1:1")

        return create_channel

    for transport in (PublisherGrpcTransport, SubscriberGrpcTransport):
        monkeypatch.setattr(transport, "create_channel", recording(transport))
    settings = PubSubSettings("lastseen-dev", None)
    publisher_client(settings).transport.close()
    subscriber_client(settings).close()

    assert [name for name, _ in asked] == ["PublisherGrpcTransport", "SubscriberGrpcTransport"]
    for _, options in asked:
        assert BACKOFF in options
        assert ("grpc.keepalive_time_ms", 30000) in options  # the transport's own, kept


def test_the_emulators_channels_add_the_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[Any] = []
    real = grpc.insecure_channel

    def recording(target: str, options: Any = None, **kwargs: Any) -> grpc.Channel:
        asked.append(list(options or ()))
        return real(target, options=options, **kwargs)

    monkeypatch.setattr(pubsub_clients.grpc, "insecure_channel", recording)
    settings = PubSubSettings("lastseen-dev", "127.0.0.1:1")
    publisher_client(settings).transport.close()
    subscriber_client(settings).close()
    assert asked == [[BACKOFF], [BACKOFF]]
