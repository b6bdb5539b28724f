"""The store contract, written once and run against each store (the ``store`` fixture: PostgreSQL,
then Redis), plus what only Redis has: its value format, its expiry, and keys others wrote."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis.asyncio
from prometheus_client import CollectorRegistry

from common.probes import DatabaseProbe
from common.retrying import DependencyUnavailable
from common.store import ObjectStore
from common.store.redis import RedisStore, ReplicasBehind, open_redis_store
from common.store.settings import RedisSettings
from consumer.batch_writer import BatchWriter
from consumer.metrics import StoreCollector
from tests.support.certificates import CertificateAuthority
from tests.support.ports import free_port
from tests.support.proxy import TcpProxy
from tests.support.redis_server import RedisServer
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

# Millisecond-exact, like both stores keep it (PostgreSQL keeps microseconds, Redis milliseconds).
# Taken at import, so the stores keep objects for an hour: a test late in the run still finds them.
NOW = datetime.now(UTC).replace(microsecond=123_000)
TTL_S = 3600
TTL_MS = TTL_S * 1000


async def test_writes_only_move_forward(store: ObjectStore) -> None:
    assert await store.write({1: NOW, 2: NOW}) == 2
    assert await store.write({1: NOW - timedelta(seconds=5), 2: NOW}) == 0
    assert await store.write({2: NOW + timedelta(seconds=1), 3: NOW}) == 2
    assert await store.read(1) == NOW, "an older observation moved 1 back"
    assert await store.read(2) == NOW + timedelta(seconds=1)
    assert await store.read(3) == NOW
    assert await store.read(4) is None
    assert await store.count() == 3


async def test_concurrent_writers_keep_the_latest(store: ObjectStore) -> None:
    times = [NOW + timedelta(milliseconds=n) for n in range(20)]
    await asyncio.gather(*(store.write(dict.fromkeys(range(50), seen)) for seen in times))
    assert {await store.read(i) for i in range(50)} == {times[-1]}


class _Owners:
    def __init__(self) -> None:
        self.stored: list[int] = []

    def on_stored(self, owners: list[int]) -> None:
        self.stored += owners

    def on_health(self, healthy: bool) -> None:
        pass


async def test_a_batch_of_duplicates_stores_each_id_once_at_its_latest(store: ObjectStore) -> None:
    writer: BatchWriter[int] = BatchWriter(store, max_rows=1000, max_delay=0.01)
    owners = _Owners()
    run = asyncio.create_task(writer.run(owners))
    for owner, (object_id, late) in enumerate([(7, 0), (7, 3), (8, 1), (7, 1), (8, 0)]):
        writer.add(object_id, NOW + timedelta(seconds=late), owner)
    await eventually(lambda: len(owners.stored) == 5, timeout=5, what="all five owners told")
    writer.close()
    await asyncio.wait_for(run, 5)
    assert sorted(owners.stored) == [0, 1, 2, 3, 4]
    assert await store.read(7) == NOW + timedelta(seconds=3)
    assert await store.read(8) == NOW + timedelta(seconds=1)
    assert await store.count() == 2


async def test_ping_answers_while_the_store_is_there(store: ObjectStore) -> None:
    await store.ping()
    assert store.overwritten == 0


# What only Redis has.


@pytest.fixture
async def redis_store(redis_url: str) -> AsyncIterator[RedisStore]:
    store = RedisStore(redis.asyncio.Redis.from_url(redis_url), prefix="object:", ttl_seconds=TTL_S)
    try:
        yield store
    finally:
        await store.close()


def _ms(seen: datetime) -> int:
    return int(seen.timestamp() * 1000)


async def test_redis_value_is_epoch_ms_and_expiry_is_last_seen_plus_ttl(
    redis_store: RedisStore,
) -> None:
    seen = datetime.now(UTC) - timedelta(seconds=10)
    await redis_store.write({42: seen})
    client = redis_store.client
    assert await client.get("object:42") == str(_ms(seen)).encode()
    assert await client.pexpiretime("object:42") == _ms(seen) + TTL_MS
    assert TTL_MS - 15_000 < await client.pttl("object:42") <= TTL_MS - 10_000


async def test_times_of_every_width_are_stored_in_plain_decimal(redis_url: str) -> None:
    """The script gets each time as 13 zero-padded digits; the key holds it without the zeros."""
    century = 100 * 365 * 86_400
    store = RedisStore(
        redis.asyncio.Redis.from_url(redis_url), prefix="object:", ttl_seconds=century
    )
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    times = {
        1: epoch,
        2: epoch + timedelta(milliseconds=7),
        3: epoch + timedelta(milliseconds=999_999_999_999),  # 12 digits: 2001-09-09
        4: epoch + timedelta(milliseconds=1_000_000_000_000),
        5: datetime.now(UTC),
    }
    try:
        assert await store.write(times) == len(times)
        for object_id, seen in times.items():
            expected = (seen - epoch) // timedelta(milliseconds=1)
            assert await store.client.get(f"object:{object_id}") == str(expected).encode()
        with pytest.raises(ValueError, match="1970-2286"):
            await store.write({6: epoch - timedelta(milliseconds=1)})
    finally:
        await store.close()


async def test_a_late_old_write_neither_moves_back_nor_extends_life(
    redis_store: RedisStore,
) -> None:
    newer = datetime.now(UTC) - timedelta(seconds=1)
    await redis_store.write({5: newer})
    assert await redis_store.write({5: newer - timedelta(seconds=20)}) == 0
    assert await redis_store.client.pexpiretime("object:5") == _ms(newer) + TTL_MS
    assert await redis_store.read(5) == datetime.fromtimestamp(_ms(newer) / 1000, UTC)


async def test_an_already_expired_write_stores_nothing(redis_store: RedisStore) -> None:
    await redis_store.write({6: datetime.now(UTC) - timedelta(seconds=TTL_S + 1)})
    assert await redis_store.read(6) is None
    assert await redis_store.count() == 0


async def test_a_key_holding_no_time_is_overwritten_and_counted(redis_store: RedisStore) -> None:
    client = redis_store.client
    await client.set("object:1", "not a number")
    await client.set("object:2", "12.5")
    await client.hset("object:3", "field", "a hash, not a string")
    await client.set("object:4", str(_ms(NOW) + 1000))  # a valid, newer time: kept
    assert await redis_store.write({1: NOW, 2: NOW, 3: NOW, 4: NOW, 5: NOW}) == 4
    for object_id in (1, 2, 3, 5):
        assert await redis_store.read(object_id) == NOW
    assert await redis_store.read(4) == NOW + timedelta(seconds=1)
    assert redis_store.overwritten == 3
    registry = CollectorRegistry()
    registry.register(StoreCollector(redis_store))
    assert registry.get_sample_value("lastseen_consumer_store_overwritten_total") == 3.0


async def test_the_script_is_loaded_again_after_the_server_forgot_it(
    redis_store: RedisStore,
) -> None:
    await redis_store.write({1: NOW})
    await redis_store.client.script_flush()  # what a restart or a promoted replica looks like
    assert await redis_store.write({1: NOW + timedelta(seconds=1), 2: NOW}) == 2
    assert await redis_store.read(1) == NOW + timedelta(seconds=1)


async def test_readiness_follows_a_cut_and_a_hang_of_redis(
    redis_server: RedisServer, make_proxy: Callable[[str, int], TcpProxy]
) -> None:
    proxy = make_proxy("127.0.0.1", redis_server.port)
    client = redis.asyncio.Redis(host="127.0.0.1", port=proxy.port, socket_timeout=1.0)
    store = RedisStore(client, prefix="object:", ttl_seconds=TTL_S)
    try:
        probe = DatabaseProbe(store.ping, timeout=1.5)
        assert await probe.check() is True
        proxy.cut()
        assert await probe.check() is False
        proxy.restore()
        assert await eventually(probe.check, timeout=5, what="ready again after the cut")
        proxy.blackhole()
        assert await probe.check() is False, "a hung Redis counts as away after the timeout"
        proxy.restore()
        assert await eventually(probe.check, timeout=5, what="ready again after the hang")
    finally:
        await store.close()


async def test_a_read_only_redis_is_not_ready(redis_server: RedisServer, redis_url: str) -> None:
    admin = redis_server.client()
    store = RedisStore(redis.asyncio.Redis.from_url(redis_url), prefix="object:", ttl_seconds=TTL_S)
    # min-replicas-to-write with no replica: the server refuses writes but answers PING.
    admin.config_set("min-replicas-to-write", 1)
    try:
        probe = DatabaseProbe(store.ping, timeout=1.5)
        assert await probe.check() is False
        with pytest.raises(store.errors):
            await store.write({1: NOW})
    finally:
        admin.config_set("min-replicas-to-write", 0)
        admin.close()
        await store.close()


async def test_min_replicas_waits_for_a_replica_and_refuses_without_one(
    tmp_path: Path,
) -> None:
    primary = RedisServer(tmp_path / "primary").start()
    replica = RedisServer(
        tmp_path / "replica", config={"replicaof": f"127.0.0.1 {primary.port}"}
    ).start()
    store = RedisStore(
        redis.asyncio.Redis(host="127.0.0.1", port=primary.port),
        prefix="object:",
        ttl_seconds=TTL_S,
        min_replicas=1,
        wait_timeout=2.0,  # WAIT returns once the replica acknowledges: margin for a busy machine
    )
    try:

        async def replica_synced() -> bool:
            info = await store.client.info("replication")
            replica_state = info.get("slave0")
            return isinstance(replica_state, dict) and replica_state.get("state") == "online"

        await eventually(replica_synced, timeout=10, what="replica in sync")
        assert await store.write({1: NOW}) == 1
        copy = replica.client()
        try:
            assert copy.get("object:1") == str(_ms(NOW)).encode(), "acked before the replica had it"
        finally:
            copy.close()
        replica.remove()
        with pytest.raises(ReplicasBehind):
            await store.write({2: NOW})
    finally:
        await store.close()
        replica.remove()
        primary.remove()


async def test_rediss_verifies_the_server_against_redis_tls_ca(tmp_path: Path) -> None:
    authority = CertificateAuthority()
    issued = authority.issue(tmp_path / "tls", "redis", ["127.0.0.1"])
    ca = authority.write_ca(tmp_path / "tls" / "ca.crt")
    tls_port = free_port()
    server = RedisServer(
        tmp_path / "redis",
        config={
            "tls-port": str(tls_port),
            "tls-cert-file": str(issued.cert),
            "tls-key-file": str(issued.key),
            "tls-ca-cert-file": str(ca),
            "tls-auth-clients": "no",
        },
    ).start()
    url = f"rediss://127.0.0.1:{tls_port}/0"
    try:
        store = await open_redis_store(
            RedisSettings(  # type: ignore[call-arg]
                _env_file=None, redis_url=url, redis_tls_ca=ca, object_ttl=TTL_S
            )
        )
        try:
            await store.write({9: NOW})
            assert await store.read(9) == NOW
        finally:
            await store.close()
        stranger = CertificateAuthority("another CA").write_ca(tmp_path / "tls" / "other.crt")
        with pytest.raises(DependencyUnavailable):
            await open_redis_store(
                RedisSettings(  # type: ignore[call-arg]
                    _env_file=None, redis_url=url, redis_tls_ca=stranger, startup_timeout=1
                )
            )
    finally:
        server.remove()
