"""The producer's core for its whole life: open the spool, connect, relay; on the way out (the HTTP
server inside has stopped, so no callback arrives any more) drain the relay within
``SHUTDOWN_GRACE``, close the connection, close the spool.

Each part owns its own resource (:meth:`Spool.opened`, :meth:`Publisher.running`,
:meth:`Relay.running`); this function takes the settings apart into their values and nests them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import structlog

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
    publisher: Publisher
    spool: Spool
    relay: Relay


@contextlib.asynccontextmanager
async def running_core(settings: ProducerSettings) -> AsyncIterator[ProducerCore]:
    """The core, running while inside. Raises :class:`producer.view.SpoolUnavailable` at once
    if the spool cannot be opened."""
    async with Spool.opened(settings.spool_path) as spool:
        publisher = Publisher(
            settings.amqp_uri,
            settings.queue_name,
            max_backoff=settings.broker_max_backoff,
            mode=settings.publish_mode,
            ssl_context=settings.amqp_ssl_context(),
        )
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
                ids_per_message=settings.ids_per_message,
                publish_timeout_s=settings.publish_timeout,
                spool_path=str(settings.spool_path),
                spool_depth=spool.depth,
            )
            yield ProducerCore(ingest, publisher, spool, relay)
        log.info("producer_stopped", spool_drained=spool.depth == 0, spool_depth=spool.depth)
