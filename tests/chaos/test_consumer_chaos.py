"""The consumer under faults: database and broker cuts, kill -9, SIGTERM under load."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import aio_pika
import asyncpg
import pytest

from common.amqp import declare_topology
from tests.support.amqp import amqp_uri_via
from tests.support.consumer_status import (
    StatusApi,
    consumer_env,
    publish,
    ready_count,
    started,
    stored,
    wait_for_empty,
)
from tests.support.processes import ServiceProcess
from tests.support.proxy import TcpProxy
from tests.support.services import Endpoints
from tests.support.waiting import eventually

pytestmark = pytest.mark.chaos


@pytest.fixture
async def channel(
    amqp_connection: aio_pika.abc.AbstractConnection, queue_name: str
) -> aio_pika.abc.AbstractChannel:
    channel = await amqp_connection.channel(publisher_confirms=True)
    await declare_topology(channel, queue_name)
    return channel


@pytest.fixture
async def status_api() -> AsyncIterator[StatusApi]:
    api = await StatusApi(delay=(0.05, 0.2)).start()
    try:
        yield api
    finally:
        await api.stop()


async def publish_range(
    channel: aio_pika.abc.AbstractChannel, queue: str, ids: list[int], per_message: int
) -> int:
    for k in range(0, len(ids), per_message):
        await publish(channel, queue, ids[k : k + per_message], callback_id=f"cb{k}")
    return (len(ids) + per_message - 1) // per_message


async def all_evens_stored(pool: asyncpg.Pool, ids: list[int], timeout: float = 40.0) -> None:
    wanted = {i for i in ids if i % 2 == 0}

    async def done() -> bool:
        return set(await stored(pool)) >= wanted

    await eventually(done, timeout=timeout, what=f"{len(wanted)} online ids stored")
    assert not any(i % 2 for i in await stored(pool))


def via_database_proxy(env: dict[str, str], proxy: TcpProxy) -> dict[str, str]:
    return {**env, "POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": str(proxy.port)}


async def test_database_cut_nothing_acked_before_commit_then_kill_and_restart(
    spawn: Callable[..., ServiceProcess],
    service_env: dict[str, str],
    status_api: StatusApi,
    channel: aio_pika.abc.AbstractChannel,
    queue_name: str,
    db_pool: asyncpg.Pool,
    endpoints: Endpoints,
    make_proxy: Callable[[str, int], TcpProxy],
) -> None:
    proxy = make_proxy(*endpoints.database_host_port)
    env = via_database_proxy(consumer_env(service_env, status_api), proxy)
    consumer = await started(spawn("consumer", env))
    proxy.cut()
    ids = list(range(100, 300))
    messages = await publish_range(channel, queue_name, ids, 20)
    await eventually(lambda: "intake_paused" in consumer.output(), timeout=30, what="flush failing")
    assert len(status_api.requests) >= 20
    consumer.kill()
    # Killed with answers in hand but no commit: not one message was acked (every message has
    # online ids; all-offline messages would rightly be acked at once). The broker requeues them
    # once it has noticed the dead connection: wait for every one of them (an acked one never
    # comes back).

    async def all_returned() -> bool:
        return await ready_count(channel, queue_name) == messages

    await eventually(all_returned, timeout=10, what=f"{messages} unacked messages requeued")
    assert await stored(db_pool) == {}
    proxy.restore()
    await started(spawn("consumer", env))
    await all_evens_stored(db_pool, ids)
    await wait_for_empty(channel, queue_name)


async def test_database_cut_running_consumer_pauses_and_stores_everything_after(
    spawn: Callable[..., ServiceProcess],
    service_env: dict[str, str],
    status_api: StatusApi,
    channel: aio_pika.abc.AbstractChannel,
    queue_name: str,
    db_pool: asyncpg.Pool,
    endpoints: Endpoints,
    make_proxy: Callable[[str, int], TcpProxy],
) -> None:
    proxy = make_proxy(*endpoints.database_host_port)
    env = via_database_proxy(consumer_env(service_env, status_api), proxy)
    consumer = await started(spawn("consumer", env))
    first = list(range(0, 100))
    await publish_range(channel, queue_name, first, 10)
    await eventually(
        lambda: len(status_api.requests) >= 20, timeout=30, what="processing under way"
    )
    proxy.cut()
    second = list(range(100, 400))
    await publish_range(channel, queue_name, second, 10)
    await eventually(lambda: "flush_failed" in consumer.output(), timeout=30, what="flush failing")
    proxy.restore()
    await all_evens_stored(db_pool, first + second)
    await eventually(
        lambda: "flush_recovered" in consumer.output(), timeout=30, what="recovery logged"
    )
    assert consumer.running()
    await wait_for_empty(channel, queue_name)
    assert consumer.terminate(timeout=10) == 0
    assert await ready_count(channel, queue_name) == 0


async def test_kill_9_mid_batch_then_restart_stores_every_online_id(
    spawn: Callable[..., ServiceProcess],
    service_env: dict[str, str],
    status_api: StatusApi,
    channel: aio_pika.abc.AbstractChannel,
    queue_name: str,
    db_pool: asyncpg.Pool,
) -> None:
    env = consumer_env(service_env, status_api, MAX_CONSUMERS="100", BATCH_MAX_DELAY="200ms")
    consumer = await started(spawn("consumer", env))
    ids = list(range(10_000, 12_000))
    await publish_range(channel, queue_name, ids, 50)

    async def some_stored() -> bool:
        return len(await stored(db_pool)) >= 100

    await eventually(some_stored, timeout=30, what="part stored")
    consumer.kill()
    assert len(await stored(db_pool)) < 1000, "killed too late to test anything"
    await started(spawn("consumer", env))
    await all_evens_stored(db_pool, ids)
    await wait_for_empty(channel, queue_name)


async def test_broker_cut_the_running_consumer_resumes_by_itself(
    spawn: Callable[..., ServiceProcess],
    service_env: dict[str, str],
    status_api: StatusApi,
    channel: aio_pika.abc.AbstractChannel,
    queue_name: str,
    db_pool: asyncpg.Pool,
    endpoints: Endpoints,
    make_proxy: Callable[[str, int], TcpProxy],
) -> None:
    proxy = make_proxy(*endpoints.amqp_host_port)
    env = {
        **consumer_env(service_env, status_api),
        "AMQP_URI": amqp_uri_via(endpoints.amqp_uri, proxy),
    }
    consumer = await started(spawn("consumer", env))
    before = list(range(0, 200))
    await publish_range(channel, queue_name, before, 20)
    await eventually(
        lambda: len(status_api.requests) >= 50, timeout=30, what="processing under way"
    )
    proxy.cut()
    await eventually(lambda: proxy.open_connections == 0, timeout=30, what="connection cut")
    await asyncio.sleep(0.5)  # the outage's length, not a wait for work to be done
    proxy.restore()
    after = list(range(200, 400))
    await publish_range(channel, queue_name, after, 20)
    await all_evens_stored(db_pool, before + after)
    assert proxy.connections_made >= 2, "the consumer reconnected through the proxy"
    assert consumer.running()
    await wait_for_empty(channel, queue_name)
    assert consumer.terminate(timeout=10) == 0


async def test_sigterm_under_load_exits_0_within_grace_and_loses_nothing(
    spawn: Callable[..., ServiceProcess],
    service_env: dict[str, str],
    channel: aio_pika.abc.AbstractChannel,
    queue_name: str,
    db_pool: asyncpg.Pool,
) -> None:
    api = await StatusApi(delay=(0.2, 1.5)).start()
    try:
        env = consumer_env(
            service_env, api, MAX_CONSUMERS="100", SHUTDOWN_GRACE="3s", STATUS_TIMEOUT="5s"
        )
        consumer = await started(spawn("consumer", env))
        ids = list(range(20_000, 20_900))
        await publish_range(channel, queue_name, ids, 30)
        await eventually(lambda: api.total_requests >= 150, timeout=30, what="under load")
        began = time.monotonic()
        consumer.signal(15)

        async def exited() -> bool:
            return not consumer.running()

        await eventually(exited, timeout=10, what="consumer exited")
        took = time.monotonic() - began
        assert consumer.returncode == 0, consumer.output()
        assert took < 3.0 + 1.0, took
        assert "consumer_drained" in consumer.output()
        await started(spawn("consumer", env))
        await all_evens_stored(db_pool, ids, timeout=60)
        await wait_for_empty(channel, queue_name)
    finally:
        await api.stop()
