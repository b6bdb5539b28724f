"""The consumer's Pub/Sub stream outlives outages (consumer.pubsub.PubSubSubscription), on the
real emulator and Google's real client.

The client gives a stream up when a lease extension failed for its whole retry deadline (60 s
of Pub/Sub unreachable): it ends the stream through its manager's ``_on_rpc_done`` with a
``RetryError`` and raises in its lease thread. Waiting out 60 s of outage per test is what the
chaos tier is for; here the stream is ended the way the client ends it, by that same call, and
the tests check what the consumer does next: a new stream that delivers, or, for an end that is
not an outage (permission refused), an error that ends the consumer. The consumer's stream goes
through a TCP proxy that is cut first, as in the outage.

The emulator (0.8.x) fails to close its side of a streaming pull that the client cancelled or lost
(``NoSuchMethodError: InternalStatus.asRuntimeException`` in its log, on the RST_STREAM): the dead
stream stays registered and is handed messages, up to its flow-control window, that nobody
receives (measured: a single message published after the new stream opened was neither delivered
nor pullable for 95 s). So the test publishes more than that window and expects the rest on the
new stream; the service closes its streams as it should.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from google.api_core import exceptions
from google.cloud import pubsub_v1

from consumer.pubsub import PubSubMessage, PubSubSubscription
from consumer.stats import WorkerStats
from tests.support.proxy import TcpProxy
from tests.support.pubsub_clients import EmulatorNames, emulator_names, subscriber_client
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

WINDOW = 10  # the stream's flow control: messages held at once


@dataclass
class AckingIntake:
    """The worker's place: acks every message and keeps its body."""

    bodies: list[bytes] = field(default_factory=list)
    stats: WorkerStats = field(default_factory=WorkerStats)
    paused: bool = False
    unsettled: int = 0

    async def on_message(self, message: PubSubMessage) -> None:  # type: ignore[override]
        self.bodies.append(message.body)
        await message.ack()


@dataclass
class Stream:
    names: EmulatorNames
    topic: str
    subscription: PubSubSubscription
    intake: AckingIntake
    supervisor: asyncio.Task[None]
    path: TcpProxy

    def publish(self, body: bytes) -> None:
        self.names.publisher.publish(self.topic, body).result(timeout=30)

    def end_like_the_client(self, error: Exception) -> None:
        """What ``send_unary_modack`` does when a lease extension exhausted its retries."""
        manager = self.subscription._future._StreamingPullFuture__manager  # type: ignore[attr-defined]
        manager._on_rpc_done(error)


@contextlib.asynccontextmanager
async def stream_on(pubsub_emulator: str) -> AsyncIterator[Stream]:
    host, port = pubsub_emulator.rsplit(":", 1)
    proxy = TcpProxy(host, int(port)).start()
    subscriber = subscriber_client(f"127.0.0.1:{proxy.port}")
    with emulator_names(pubsub_emulator) as names:
        topic = names.topic()
        path = names.subscription(topic, ack_deadline_seconds=10)
        intake = AckingIntake()
        subscription = PubSubSubscription(
            subscriber,
            path,
            intake,  # type: ignore[arg-type]
            pubsub_v1.types.FlowControl(max_messages=WINDOW),
            on_cancel=lambda: None,
        )
        stop = asyncio.Event()
        supervisor = asyncio.create_task(subscription.supervise(stop))
        try:
            yield Stream(names, topic, subscription, intake, supervisor, proxy)
        finally:
            stop.set()
            with contextlib.suppress(RuntimeError):
                await asyncio.wait_for(supervisor, 10)
            await subscription.close()
            subscriber.close()
            proxy.stop()


async def test_a_stream_given_up_while_pubsub_was_unreachable_is_opened_again(
    pubsub_emulator: str,
) -> None:
    async with stream_on(pubsub_emulator) as stream:
        stream.publish(b"before")
        await eventually(lambda: b"before" in stream.intake.bodies, timeout=20, what="first")

        stream.path.cut()
        lost = exceptions.RetryError(
            "Timeout of 60.0s exceeded", exceptions.ServiceUnavailable("connection refused")
        )
        stream.end_like_the_client(lost)
        # The old stream's shutdown flushes its queued acks first (retried while the path is
        # down): the outage ends, and then the consumer opens the new stream.
        stream.path.restore()
        await eventually(
            lambda: stream.subscription.streams_opened == 2, timeout=30, what="a new stream"
        )
        assert not stream.supervisor.done()

        # Published one by one until the new stream delivers: the emulator's dead streams take
        # up to a window each first (see above); the service's would take none.
        published: list[bytes] = []

        async def delivered_on_the_new_stream() -> bool:
            if set(published) & set(stream.intake.bodies):
                return True
            body = b"after-%d" % len(published)
            await asyncio.to_thread(stream.publish, body)
            published.append(body)
            return False

        await eventually(delivered_on_the_new_stream, timeout=30, interval=0.1, what="delivery")
        assert stream.subscription.connected()
        assert not stream.supervisor.done()


async def test_a_stream_ended_by_anything_but_an_outage_ends_the_subscription(
    pubsub_emulator: str,
) -> None:
    async with stream_on(pubsub_emulator) as stream:
        stream.end_like_the_client(exceptions.PermissionDenied("the role was revoked"))
        with pytest.raises(RuntimeError, match="PermissionDenied"):
            await asyncio.wait_for(stream.supervisor, 10)
        assert stream.subscription.streams_opened == 1
