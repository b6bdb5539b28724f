"""STORE=redis under faults, with the same promises as PostgreSQL: the consumer (in-process, real
RabbitMQ, steady load) meets a Redis connection cut, a Redis path that hangs (black-holed), and
Redis killed with -9 and restarted from its AOF (``appendfsync everysec``). During each, intake
pauses and ``/ready`` answers 503; after each it resumes by itself; in the end every online id is
stored, none offline, every message acked. The time from each fault's end to ``/ready`` 200 is
printed (docs/redis.md)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aio_pika
import httpx
import pytest

from common.amqp import declare_topology
from tests.support.consumer_status import (
    InProcessConsumer,
    StatusApi,
    consumer_env,
    consumer_settings,
    wait_for_empty,
)
from tests.support.ports import free_port
from tests.support.proxy import TcpProxy
from tests.support.redis_server import RedisServer
from tests.support.services import Endpoints
from tests.support.steady_load import SteadyLoad
from tests.support.waiting import eventually

pytestmark = pytest.mark.chaos


@pytest.fixture
async def status_api() -> AsyncIterator[StatusApi]:
    api = await StatusApi(delay=(0.01, 0.1)).start()
    try:
        yield api
    finally:
        await api.stop()


async def test_redis_cut_hang_and_kill_lose_no_online_id(
    tmp_path: Path,
    endpoints: Endpoints,
    queue_name: str,
    amqp_connection: aio_pika.abc.AbstractConnection,
    status_api: StatusApi,
    make_proxy: Callable[[str, int], TcpProxy],
) -> None:
    server = RedisServer(tmp_path / "redis", config={"appendfsync": "everysec"}).start()
    proxy = make_proxy("127.0.0.1", server.port)
    metrics_port = free_port()
    channel = await amqp_connection.channel(publisher_confirms=True)
    await declare_topology(channel, queue_name)
    env = consumer_env(
        {
            "AMQP_URI": endpoints.amqp_uri,
            "QUEUE_NAME": queue_name,
            "STORE": "redis",
            "REDIS_URL": f"redis://127.0.0.1:{proxy.port}/0",
            "OBJECT_TTL": "1h",
            "STARTUP_TIMEOUT": "20s",
            "METRICS_PORT": str(metrics_port),
        },
        status_api,
        MAX_CONSUMERS="200",
        MAX_ATTEMPTS="8",
    )
    consumer = InProcessConsumer(consumer_settings(env))
    await consumer.start(channel)
    load = SteadyLoad(channel, queue_name, messages_per_second=30)
    loading = asyncio.create_task(load.run())

    async def ready_status() -> int:
        async with httpx.AsyncClient(timeout=2) as client:
            return (await client.get(f"http://127.0.0.1:{metrics_port}/ready")).status_code

    async def ready_is(expected: int) -> bool:
        return await ready_status() == expected

    faults: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
        "cut": (proxy.cut, proxy.restore),
        "hang": (proxy.blackhole, proxy.restore),
        "kill -9 + AOF restart": (server.kill, server.start),
    }
    recovered: dict[str, float] = {}
    try:
        await eventually(lambda: ready_is(200), timeout=10, what="ready at start")
        for name, (inject, repair) in faults.items():
            await load.grown_by(300)
            inject()
            await eventually(lambda: ready_is(503), timeout=10, what=f"not ready: {name}")
            await load.grown_by(300)  # work arrives while Redis is away
            repaired_at = time.monotonic()
            repair()
            await eventually(lambda: ready_is(200), timeout=30, what=f"ready after {name}")
            recovered[name] = time.monotonic() - repaired_at
        await load.grown_by(300)
    finally:
        load.stop()
        await loading
    try:
        await wait_for_empty(channel, queue_name)
        evens = {i for i in load.published if i % 2 == 0}
        reader = server.client()
        try:

            def stored() -> set[int]:
                ids = sorted(load.published)
                values = reader.mget([f"object:{i}" for i in ids])
                return {i for i, value in zip(ids, values, strict=True) if value is not None}

            await eventually(lambda: evens <= stored(), timeout=30, what="every online id")
            assert stored() == evens, "an offline id was stored"
        finally:
            reader.close()
    finally:
        await consumer.stop()
        server.remove()
    print("redis chaos, seconds from repair to /ready 200:", recovered)  # noqa: T201
