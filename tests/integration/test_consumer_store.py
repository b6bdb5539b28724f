"""The consumer end to end (in-process, real RabbitMQ) against each store: online ids stored,
offline never, and a message acked only once its ids were written. With ``STORE=redis`` the
consumer is given no ``POSTGRES_*`` setting at all."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

import aio_pika
import pytest

from common.amqp import declare_topology
from common.store import ObjectStore
from tests.support.consumer_status import (
    InProcessConsumer,
    StatusApi,
    consumer_env,
    consumer_settings,
    publish,
    ready_count,
    wait_for_empty,
)
from tests.support.database import postgres_env
from tests.support.proxy import TcpProxy
from tests.support.services import Endpoints
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
async def status_api() -> AsyncIterator[StatusApi]:
    api = await StatusApi(delay=(0.01, 0.05)).start()
    try:
        yield api
    finally:
        await api.stop()


@pytest.fixture
async def channel(
    amqp_connection: aio_pika.abc.AbstractConnection, queue_name: str
) -> aio_pika.abc.AbstractChannel:
    channel = await amqp_connection.channel(publisher_confirms=True)
    await declare_topology(channel, queue_name)
    return channel


def _store_env(
    store: ObjectStore, database_url: str, redis_url: str, port: int | None = None
) -> dict[str, str]:
    """The store settings of a consumer writing where ``store`` reads (through ``port`` if
    given)."""
    if store.name == "redis":
        parts = urlsplit(redis_url)
        return {"STORE": "redis", "REDIS_URL": f"redis://127.0.0.1:{port or parts.port}/0"}
    env = postgres_env(database_url)
    if port is not None:
        env.update(POSTGRES_HOST="127.0.0.1", POSTGRES_PORT=str(port))
    return env


async def _stored(store: ObjectStore, ids: list[int]) -> set[int]:
    return {i for i in ids if await store.read(i) is not None}


async def test_online_ids_stored_offline_never_every_message_acked(
    store: ObjectStore,
    endpoints: Endpoints,
    database_url: str,
    redis_url: str,
    queue_name: str,
    channel: aio_pika.abc.AbstractChannel,
    status_api: StatusApi,
) -> None:
    base = {"AMQP_URI": endpoints.amqp_uri, "QUEUE_NAME": queue_name, "STARTUP_TIMEOUT": "20s"}
    env = consumer_env({**base, **_store_env(store, database_url, redis_url)}, status_api)
    consumer = InProcessConsumer(consumer_settings(env))
    ids = list(range(100, 300))
    await consumer.start(channel)
    try:
        for k in range(0, len(ids), 20):
            await publish(channel, queue_name, ids[k : k + 20], callback_id=f"cb{k}")
        evens = {i for i in ids if i % 2 == 0}

        async def all_stored() -> bool:
            return await _stored(store, ids) == evens

        await eventually(all_stored, timeout=30, what="online ids stored")
        await wait_for_empty(channel, queue_name)
    finally:
        await consumer.stop()
    assert await store.count() == len(evens), "an offline id was stored"
    assert await ready_count(channel, queue_name) == 0, "every message was acked"


async def test_a_message_is_acked_only_after_its_ids_were_written(
    store: ObjectStore,
    endpoints: Endpoints,
    database_url: str,
    redis_url: str,
    queue_name: str,
    channel: aio_pika.abc.AbstractChannel,
    status_api: StatusApi,
    make_proxy: Callable[[str, int], TcpProxy],
) -> None:
    target = urlsplit(redis_url if store.name == "redis" else database_url)
    proxy = make_proxy(target.hostname or "127.0.0.1", target.port or 0)
    base = {"AMQP_URI": endpoints.amqp_uri, "QUEUE_NAME": queue_name, "STARTUP_TIMEOUT": "20s"}
    store_env = _store_env(store, database_url, redis_url, port=proxy.port)
    env = consumer_env({**base, **store_env}, status_api, SHUTDOWN_GRACE="2s")
    first = InProcessConsumer(consumer_settings(env))
    await first.start(channel)
    proxy.cut()
    for k in range(3):
        await publish(channel, queue_name, [2 * k, 2 * k + 1], callback_id=f"cb{k}")
    await eventually(
        lambda: all(status_api.requests[i] for i in range(6)), timeout=20, what="ids looked up"
    )
    # The store is away: the writer keeps the batch; stopping must leave the messages unacked.
    await first.stop()
    assert await _stored(store, list(range(6))) == set()

    async def all_back() -> bool:
        return await ready_count(channel, queue_name) == 3

    await eventually(all_back, timeout=10, what="the three unacked messages back in the queue")
    proxy.restore()
    second = InProcessConsumer(consumer_settings(env))
    await second.start(channel)
    try:

        async def evens_stored() -> bool:
            return await _stored(store, list(range(6))) == {0, 2, 4}

        await eventually(evens_stored, timeout=30, what="stored after the store came back")
        await wait_for_empty(channel, queue_name)
    finally:
        await second.stop()
