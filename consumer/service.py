"""The consumer's lifespan: connect, declare, subscribe, run until told to stop, drain, close.

The broker is chosen here, once (:func:`open_broker`, from ``BROKER``); below it the worker and the
shutdown see only :mod:`consumer.broker`'s interfaces."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from common.heap import freeze_startup_heap
from common.heartbeat import beat_forever
from common.metrics import ProbeServer, service_registry
from common.probes import DatabaseProbe
from common.store import ObjectStore
from consumer import metrics
from consumer.backoff import RetryPolicy, retry_tiers
from consumer.batch_writer import BatchWriter
from consumer.broker import ConsumerBroker, Message, Subscription
from consumer.ledger import Delivery
from consumer.settings import ConsumerSettings
from consumer.status import StatusClientKind, StatusLookup
from consumer.subscription import ASSUMED_IDS_PER_MESSAGE, prefetch_for
from consumer.worker import Worker

if TYPE_CHECKING:
    from consumer.status_httptools import HttptoolsStatusClient
    from consumer.status_standard import StandardStatusClient

log = structlog.get_logger("consumer")
T = TypeVar("T")


def status_client_class(
    kind: StatusClientKind,
) -> type[StandardStatusClient | HttptoolsStatusClient]:
    """The client ``STATUS_CLIENT`` names, imported only when chosen: the default never imports
    aiohttp's client."""
    if kind == "standard":
        from consumer.status_standard import StandardStatusClient

        return StandardStatusClient
    from consumer.status_httptools import HttptoolsStatusClient

    return HttptoolsStatusClient


# Of the shutdown grace, what is kept for the last flush and acks after lookups are cut off.
FLUSH_RESERVE = 2.0


YOUNG_GC_THRESHOLD = 200_000


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
    freeze_startup_heap(YOUNG_GC_THRESHOLD)


async def open_store(settings: ConsumerSettings) -> ObjectStore:
    """The store ``STORE`` names, connected: the one place the consumer chooses (each store's
    client is imported only when chosen)."""
    if settings.store == "redis":
        from common.store.redis import open_redis_store

        return await open_redis_store(settings)
    from common.store.postgres import PostgresStore

    return await PostgresStore.open(settings)


@contextlib.asynccontextmanager
async def open_broker(settings: ConsumerSettings) -> AsyncIterator[ConsumerBroker]:
    """The broker ``BROKER`` names, connected and its topology declared: the one place the
    consumer chooses (each broker's client is imported only when chosen)."""
    if settings.broker == "pubsub":
        from consumer.pubsub import max_lease_for, open_pubsub

        async with open_pubsub(
            settings.pubsub,
            settings.pubsub_topology,
            startup_timeout=settings.startup_timeout,
            # The client counts messages, as RabbitMQ's prefetch does; unset, sized once (the
            # client cannot resize a running stream's flow control).
            max_messages=settings.prefetch
            or prefetch_for(settings.max_consumers, ASSUMED_IDS_PER_MESSAGE),
            max_lease_s=max_lease_for(settings.retry_max_delay, settings.status_timeout),
        ) as pubsub:
            yield pubsub
        return
    from consumer.rabbitmq import open_rabbitmq

    async with open_rabbitmq(
        settings.amqp_uri,
        ssl_context=settings.amqp_ssl_context(),
        startup_timeout=settings.startup_timeout,
        label=settings.amqp_uri_masked,
        queue_name=settings.queue_name,
        retry_tiers_ms=retry_tiers(settings.retry_base_delay, settings.retry_max_delay),
        max_consumers=settings.max_consumers,
        prefetch=settings.prefetch,
        watchdog_interval=settings.watchdog_interval,
    ) as rabbitmq:
        yield rabbitmq


async def run_consumer(settings: ConsumerSettings, stop: asyncio.Event) -> None:
    """Consume until ``stop`` is set, then shut down within ``SHUTDOWN_GRACE``."""
    async with open_broker(settings) as broker:
        store = await open_store(settings)
        try:
            async with status_client_class(settings.status_client)(
                settings.status_base_url,
                max_connections=settings.max_consumers,
                timeout=settings.status_timeout,
            ) as status:
                await _serve(settings, broker, store, status, stop)
        finally:
            await store.close()
    log.info("consumer_stopped")


async def _serve(
    settings: ConsumerSettings,
    broker: ConsumerBroker,
    store: ObjectStore,
    status: StatusLookup,
    stop: asyncio.Event,
) -> None:
    registry = service_registry()
    observed = metrics.ConsumerMetrics(registry)
    writer: BatchWriter[Delivery[Message]] = BatchWriter(
        store,
        max_rows=settings.batch_max_rows,
        max_delay=settings.batch_max_delay,
        on_flush=observed.flushed,
    )
    worker = Worker(
        status,
        writer,
        broker.hand_off,
        max_in_flight=settings.max_consumers,
        retry=RetryPolicy(
            settings.max_attempts, settings.retry_base_delay, settings.retry_max_delay
        ),
        metrics=observed,
    )
    metrics.register(worker, registry, store)
    database = DatabaseProbe(store.ping)
    probes = ProbeServer(
        registry,
        {
            "broker": broker.connected,
            "database": lambda: database.ok and not worker.paused,
        },
        service="consumer",
    )
    # Every task (and the metrics server) is started in this stack, so whatever raises below
    # (a refused subscription, a crash) cancels and awaits them: none outlives the call.
    async with contextlib.AsyncExitStack() as tasks:
        await tasks.enter_async_context(probes.serving(settings.metrics_port))
        start_in(tasks, database.run())
        start_in(tasks, beat_forever())
        writer_task = start_in(tasks, writer.run(worker))
        subscription = await broker.subscribe(worker)
        log.info(
            "consumer_started",
            queue=settings.queue_name,
            broker=broker.label,
            max_consumers=settings.max_consumers,
            status_url=settings.status_base_url,
            status_client=settings.status_client,
            store=store.name,
        )
        supervisor = start_in(tasks, subscription.supervise(stop))
        try:
            # The writer only returns when closed: if it ends before, it crashed (a bug), and a
            # consumer that cannot commit must not keep taking work. Exit; nothing unacked is
            # lost.
            await asyncio.wait([supervisor, writer_task], return_when=asyncio.FIRST_COMPLETED)
            if writer_task.done():
                stop.set()
                await supervisor
                writer_task.result()
                raise RuntimeError("batch writer stopped unexpectedly")
            supervisor.result()
        finally:
            await _shut_down(settings.shutdown_grace, subscription, worker, writer, writer_task)


async def _shut_down(
    grace: float,
    subscription: Subscription,
    worker: Worker,
    writer: BatchWriter[Delivery[Message]],
    writer_task: asyncio.Task[None],
) -> None:
    """Stop deliveries, let what was received finish, flush and ack, all within ``grace``."""
    started = time.monotonic()
    deadline = started + grace
    log.info("consumer_stopping", grace_s=grace)
    await subscription.cancel()
    await worker.drain(max(started, deadline - FLUSH_RESERVE))
    writer.close(deadline)
    if not writer_task.done():
        try:
            await asyncio.wait_for(writer_task, max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            log.error("final_flush_incomplete", rows=writer.pending)
    await worker.wait_side_tasks(deadline)
    log.info("consumer_drained", unsettled=worker.unsettled, **worker.stats.as_dict())


def start_in(
    stack: contextlib.AsyncExitStack, coroutine: Coroutine[Any, Any, T]
) -> asyncio.Task[T]:
    """A task that ``stack`` cancels and awaits when it closes."""
    task = asyncio.create_task(coroutine)
    stack.push_async_callback(_cancel_and_wait, task)
    return task


async def _cancel_and_wait(task: asyncio.Task[Any]) -> None:
    task.cancel()
    await asyncio.wait([task])  # unlike ``await task``, never mistakes its end for our cancel
