"""The consumer's lifespan: connect, declare, subscribe, run until told to stop, drain, close."""

from __future__ import annotations

import asyncio
import gc
import time

import aio_pika
import structlog

from common.amqp import connect_amqp, declare_topology
from common.db import Executor, create_pool, migrate
from common.heartbeat import beat_forever
from common.metrics import ProbeServer, service_registry
from common.probes import DatabaseProbe
from common.versions import FastPath
from consumer import metrics
from consumer.backoff import retry_tiers
from consumer.batch_writer import BatchWriter
from consumer.settings import ConsumerSettings
from consumer.status_client import FAST_PATH, StatusClient
from consumer.subscription import Subscription
from consumer.worker import Worker

log = structlog.get_logger("consumer")


def FAST_PATHS(settings: ConsumerSettings) -> tuple[FastPath, ...]:
    """The fast paths these settings select (checked at start-up)."""
    return (FAST_PATH,)


PUBLISH_TIMEOUT = 10.0
# Of the shutdown grace, what is kept for the last flush and acks after lookups are cut off.
FLUSH_RESERVE = 2.0


def tune_gc() -> None:
    """Never re-scan what start-up built, and start a young collection only after 200,000 more
    allocations than deallocations.

    Thousands of requests in flight keep a few hundred thousand objects alive for ~2.3 s each.
    A young collection traverses every object allocated since the last one that is still alive:
    nearly all the requests in flight, ~150 ms at 8,000. CPython starts one when allocations
    outnumber deallocations by the gen-0 threshold, and that count drifts up although almost
    nothing survives: with ``(50000, 20, 1000)`` (the defaults ``(700, 10, 10)`` cost a third
    of the CPU) it was ~1 collection per second at 3,000 ids/s, 13-25% of the consumer's CPU
    (py-spy: ``gc_collect_main``). The garbage here is acyclic (a collection at 3,000 ids/s
    frees nothing), so reference counting frees it. At 200,000 the drift (~2,500/s) starts a
    collection every minute or so, and cyclic garbage still starts one: an error path that
    leaves cycles (a refused connection leaves ~45 objects) is collected after ~4,000 such
    failures, a few tens of MB at most.
    """
    gc.freeze()
    gc.set_threshold(200_000, 10, 10)


async def run_consumer(settings: ConsumerSettings, stop: asyncio.Event) -> None:
    """Consume until ``stop`` is set, then shut down within ``SHUTDOWN_GRACE``."""
    connection = await connect_amqp(
        settings.amqp_uri,
        connection_name="lastseen-consumer",
        deadline=settings.startup_timeout,
        ssl_context=settings.amqp_ssl_context(),
    )
    try:
        pool = await create_pool(
            settings.postgres_dsn,
            max_size=settings.postgres_pool_size,
            deadline=settings.startup_timeout,
            ssl=settings.postgres_ssl(),
        )
        try:
            await migrate(pool)
            async with StatusClient(
                settings.status_base_url,
                max_connections=settings.max_consumers,
                timeout=settings.status_timeout,
            ) as status:
                await _serve(settings, connection, pool, status, stop)
        finally:
            await pool.close()
    finally:
        await connection.close()
    log.info("consumer_stopped")


async def _serve(
    settings: ConsumerSettings,
    connection: aio_pika.abc.AbstractRobustConnection,
    pool: Executor,
    status: StatusClient,
    stop: asyncio.Event,
) -> None:
    tiers = retry_tiers(settings.retry_base_delay, settings.retry_max_delay)
    publish_channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    await declare_topology(publish_channel, settings.queue_name, retry_delays_ms=tiers)

    async def publish(message: aio_pika.Message, routing_key: str) -> None:
        # mandatory + on_return_raises: a message no queue takes is an error, not a silent drop.
        await publish_channel.default_exchange.publish(
            message, routing_key, mandatory=True, timeout=PUBLISH_TIMEOUT
        )

    registry = service_registry()
    observed = metrics.ConsumerMetrics(registry)
    worker = Worker(settings, status, publish, metrics=observed)
    writer = BatchWriter(
        pool,
        max_rows=settings.batch_max_rows,
        max_delay=settings.batch_max_delay,
        on_stored=worker.on_stored,
        on_health=lambda healthy: worker.set_paused(not healthy),
        on_flush=observed.flushed,
    )
    worker.attach(writer)
    metrics.register(worker, registry)
    database = DatabaseProbe(pool)
    probes = ProbeServer(
        registry,
        {
            "broker": connection.connected.is_set,
            "database": lambda: database.ok and not worker.paused,
        },
        service="consumer",
    )
    await probes.start(settings.metrics_port)
    probing = asyncio.create_task(database.run())
    heartbeat = asyncio.create_task(beat_forever())
    shutdown_deadline: list[float] = []
    writer_task = asyncio.create_task(
        writer.run(deadline=lambda: shutdown_deadline[0] if shutdown_deadline else None)
    )
    subscription = Subscription(connection, worker, settings)
    await subscription.start()
    log.info(
        "consumer_started",
        queue=settings.queue_name,
        broker=settings.amqp_uri_masked,
        max_consumers=settings.max_consumers,
        retry_tiers_ms=list(tiers),
        status_url=settings.status_base_url,
    )
    supervisor = asyncio.create_task(subscription.supervise(stop))
    try:
        # The writer only returns when closed: if it ends before, it crashed (a bug), and a
        # consumer that cannot commit must not keep taking work. Exit; nothing unacked is lost.
        await asyncio.wait([supervisor, writer_task], return_when=asyncio.FIRST_COMPLETED)
        if writer_task.done():
            stop.set()
            await supervisor
            writer_task.result()
            raise RuntimeError("batch writer stopped unexpectedly")
        supervisor.result()
    finally:
        started = time.monotonic()
        deadline = started + settings.shutdown_grace
        shutdown_deadline.append(deadline)
        heartbeat.cancel()
        probing.cancel()
        log.info("consumer_stopping", grace_s=settings.shutdown_grace)
        await subscription.cancel()
        await worker.drain(max(started, deadline - FLUSH_RESERVE))
        writer.close()
        if not writer_task.done():
            try:
                await asyncio.wait_for(writer_task, max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                log.error("final_flush_incomplete", rows=writer.pending)
        await worker.wait_side_tasks(deadline)
        log.info("consumer_drained", unsettled=len(worker.in_process), **worker.stats)
        await probes.close()
