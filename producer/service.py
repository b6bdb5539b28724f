"""The producer's core for its whole life: open the spool, connect, relay; on the way out (the HTTP
server inside has stopped, so no callback arrives any more) drain the relay within
``SHUTDOWN_GRACE``, close the connection, close the spool.

Each part owns its own resource (:meth:`Spool.opened`, the broker's ``running``,
:meth:`Relay.running`); this function takes the settings apart into their values and nests them.
The broker is chosen here, once, from ``BROKER`` (:func:`broker_for`); the rest of the producer
sees it only as a :class:`producer.broker.ProducerBroker`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import structlog

from producer.broker import ProducerBroker
from producer.ingest import Ingest
from producer.publisher import Publisher
from producer.relay import Relay
from producer.settings import ProducerSettings
from producer.spool import Spool

log = structlog.get_logger("producer")


@dataclass(frozen=True)
class ProducerCore:
    """The running parts. HTTP code gets only ``ingest`` (as a :class:`producer.view.IngestView`);
    the parts are for the entry point's wiring and for tests that drive a failure."""

    ingest: Ingest
    publisher: ProducerBroker
    spool: Spool
    relay: Relay


@contextlib.asynccontextmanager
async def running_core(settings: ProducerSettings) -> AsyncIterator[ProducerCore]:
    """The core, running while inside. Raises :class:`producer.view.SpoolUnavailable` at once
    if the spool cannot be opened."""
    async with Spool.opened(settings.spool_path) as spool:
        publisher = broker_for(settings)
        relay = Relay(
            spool,
            publisher,
            batch_size=settings.relay_batch_size,
            publish_timeout=settings.relay_publish_timeout,
            max_backoff=settings.broker_max_backoff,
        )
        ingest = Ingest(
            publisher,
            spool,
            ids_per_message=settings.ids_per_message,
            publish_timeout=settings.publish_timeout,
        )
        async with publisher.running(), relay.running(drain_within=settings.shutdown_grace):
            log.info(
                "producer_started",
                broker=settings.broker,
                ids_per_message=settings.ids_per_message,
                publish_timeout_s=settings.publish_timeout,
                spool_path=str(settings.spool_path),
                spool_depth=spool.depth,
            )
            yield ProducerCore(ingest, publisher, spool, relay)
        log.info("producer_stopped", spool_drained=spool.depth == 0, spool_depth=spool.depth)


def broker_for(settings: ProducerSettings) -> ProducerBroker:
    """The broker ``BROKER`` names, built from its settings (not running yet)."""
    if settings.broker == "pubsub":
        # Imported only here: Google's client (gRPC, protobuf) costs the default broker nothing.
        from producer.pubsub_publisher import PubSubPublisher

        return PubSubPublisher(
            settings.pubsub, settings.pubsub_topology, max_backoff=settings.broker_max_backoff
        )
    return Publisher(
        settings.amqp_uri,
        settings.queue_name,
        max_backoff=settings.broker_max_backoff,
        mode=settings.publish_mode,
        ssl_context=settings.amqp_ssl_context(),
    )
