"""The consumer on a Redis Cluster it does not depend on any one node of: 3 masters and 3 replicas
from Debian's redis-server, formed by ``redis-cli --cluster create``. Under a steady load through
the real RabbitMQ, the status API answering at the assessment's delays (0.3-4.3 s): a master
killed with -9 (its replica promoted), a manual failover, and slots moved to another master while
the consumer writes (MOVED/ASK followed by the client). Every
online id of every message is stored, none offline, every message acked.

The load is modest on purpose (the tier stays near a minute on a shared machine); what it checks
is loss, not speed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import aio_pika
import pytest
import redis.asyncio
from redis.asyncio.cluster import ClusterNode

from common.amqp import declare_topology
from common.store.redis import RedisStore
from tests.support.consumer_status import (
    InProcessConsumer,
    StatusApi,
    consumer_env,
    consumer_settings,
    wait_for_empty,
)
from tests.support.redis_cluster import RedisClusterNodes
from tests.support.services import Endpoints
from tests.support.steady_load import SteadyLoad
from tests.support.waiting import eventually

pytestmark = pytest.mark.rediscluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterNodes]:
    nodes = RedisClusterNodes(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield nodes.start()
    finally:
        nodes.remove()


@pytest.fixture
async def status_api() -> AsyncIterator[StatusApi]:
    # The assessment's delays: lookups are in flight across every fault, writes land during them.
    api = await StatusApi(delay=(0.3, 4.3)).start()
    try:
        yield api
    finally:
        await api.stop()


async def test_no_online_id_lost_through_kill_failover_and_resharding(
    cluster: RedisClusterNodes,
    endpoints: Endpoints,
    queue_name: str,
    amqp_connection: aio_pika.abc.AbstractConnection,
    status_api: StatusApi,
) -> None:
    channel = await amqp_connection.channel(publisher_confirms=True)
    await declare_topology(channel, queue_name)
    env = consumer_env(
        {
            "AMQP_URI": endpoints.amqp_uri,
            "QUEUE_NAME": queue_name,
            "STORE": "redis",
            "REDIS_URL": cluster.seeds,
            "OBJECT_TTL": "10m",  # nothing expires during the test
            "STARTUP_TIMEOUT": "20s",
        },
        status_api,
        # 800 ids/s at a mean of 2.3 s: ~1,850 lookups in flight (Little's law).
        MAX_CONSUMERS="3000",
        STATUS_TIMEOUT="10s",  # above the slowest answer (4.3 s): none is cut and retried
        MAX_ATTEMPTS="8",
    )
    consumer = InProcessConsumer(consumer_settings(env))
    await consumer.start(channel)
    load = SteadyLoad(channel, queue_name, messages_per_second=40)  # 800 ids/s
    loading = asyncio.create_task(load.run())
    try:
        await load.grown_by(1500)
        first, second, third = cluster.masters()[:3]
        promoted = await asyncio.to_thread(cluster.kill_master, first)
        await load.grown_by(1500)
        await asyncio.to_thread(cluster.manual_failover, second)
        await load.grown_by(1500)
        await asyncio.to_thread(cluster.reshard, third, promoted, 1000)
        await load.grown_by(1500)
    finally:
        load.stop()
        await loading
    await wait_for_empty(channel, queue_name)
    evens = {i for i in load.published if i % 2 == 0}
    reader = redis.asyncio.RedisCluster(
        startup_nodes=[
            ClusterNode("127.0.0.1", node.port) for node in cluster.nodes if node.server.running
        ]
    )
    try:

        async def stored() -> set[int]:
            found: set[int] = set()
            ids = sorted(load.published)
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                values = await reader.mget_nonatomic([f"object:{i}" for i in chunk])
                found |= {i for i, value in zip(chunk, values, strict=True) if value is not None}
            return found

        async def all_online_stored() -> bool:
            return evens <= await stored()

        await eventually(all_online_stored, timeout=30, interval=0.5, what="every online id")
        found = await stored()
        assert found == evens, f"offline ids stored: {sorted(found - evens)[:10]}"
        # What the live view counts: a SCAN of every master.
        assert await RedisStore(reader, prefix="object:", ttl_seconds=600).count() == len(evens)
    finally:
        await reader.aclose()
        await consumer.stop()
    assert len(evens) >= 3000


async def test_one_call_per_node_and_per_slot_again_where_the_map_is_stale(
    cluster: RedisClusterNodes,
) -> None:
    """A batch goes to each master in one script call; slots moved behind the client's back
    make the owner of its map refuse the call at the first key it no longer serves, and those
    keys are written per slot, following MOVED. Monotonic writes and overwritten garbage hold on
    the per-node path as on one server."""
    cluster.wait_healthy()
    client = redis.asyncio.RedisCluster(
        startup_nodes=[
            ClusterNode("127.0.0.1", node.port) for node in cluster.nodes if node.server.running
        ]
    )
    store = RedisStore(client, prefix="stale:", ttl_seconds=600)
    try:
        now = datetime.now(UTC).replace(microsecond=0)
        assert await store.write(dict.fromkeys(range(1000), now)) == 1000
        assert store.rerouted == 0
        # someone else's values: not a time, and not even a string
        await client.set("stale:1000", "garbage")
        await client.hset("stale:1001", "a", "b")
        source, target = cluster.masters()[:2]
        await asyncio.to_thread(cluster.reshard, source, target, 2000)  # the client not told
        later = now + timedelta(seconds=5)
        batch = dict.fromkeys(range(2000, 3000), later) | {1000: later, 1001: later}
        batch |= {0: now - timedelta(seconds=5)}  # older than stored: never moves it back
        assert await store.write(batch) == 1002
        assert store.rerouted >= 1, "the stale map should have sent a call to the old owner"
        assert store.overwritten == 2
        for object_id in (*range(2000, 3000), 1000, 1001):
            assert await store.read(object_id) == later
        assert await store.read(0) == now
    finally:
        await store.close()
