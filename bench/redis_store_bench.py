"""Redis store throughput: how many ids/s one redis-server core stores through the consumer's
batched writes (``RedisStore.write``: the monotonic script by EVALSHA, pipelined), the server's CPU
per stored id, and its memory per stored key.

A redis-server of its own for each repeat (free port, temporary folder, AOF everysec as
docs/redis.md suggests; never the machine's 6379 one); ``--writers`` concurrent writers each send
batches of ``--batch`` new ids back to back for ``--seconds``. The figure of interest is ids stored
per second of *server* CPU: the issue's floor is 100,000 per core (≤ 10 µs of server CPU per id).

Where each figure comes from:

* server CPU: user + system time of the redis-server process from ``/proc/<pid>/stat`` (all its
  threads; an AOF rewrite's forked child is not counted until reaped, and is reported apart as
  ``aof_rewrites``), and the main thread's alone from ``INFO cpu``
  (``used_cpu_sys_main_thread + used_cpu_user_main_thread``): the core that limits one shard.
* ids stored: the sum of what the writes returned (every id is new, so each is one key written).
* time inside the script: ``INFO commandstats`` ``cmdstat_evalsha`` ``usec`` (wall time of the
  script calls, so preemption on a busy machine adds to it) and the ``SET`` calls it made.
* memory per key: ``INFO memory`` ``used_memory`` after the run minus before, over the keys
  stored (dict, expires dict and allocator overhead included), and ``MEMORY USAGE`` of one key.

    python -m bench.redis_store_bench [--seconds 8] [--batch 500] [--writers 2] [--repeats 3]
                                      [--no-aof] [--cluster] [--ttl 3600] [--against-postgres]

``--against-postgres``: each run alternates with the same writes through the consumer's
``PostgresStore`` (a scratch database on ``BENCH_DATABASE_URL``'s server), and the client CPU per
stored id of the two is compared: that write is the only code of the consumer that differs between
``STORE=redis`` and ``STORE=postgres``, ~1.5 µs of its ~80 µs per id, well inside the noise of two
whole-consumer runs.

``--cluster``: the same on a Redis Cluster of 3 masters and 3 replicas (tests/support), CPU summed
over the masters (the replicas' apart); the keys of a batch spread over the hash slots, one script
call per slot.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio

from bench.measure import ADMIN_DSN, cpu_seconds, database_dsn, own_cpu_seconds
from bench.verdicts import Spread
from common.db import migrate
from common.store import ObjectStore
from common.store.postgres import PostgresStore
from common.store.redis import RedisStore
from tests.support.redis_server import RedisServer

# The consumer's BATCH_MAX_ROWS default: one consumer batch is one write.
BATCH = 500


@dataclass(frozen=True)
class StoreRun:
    seconds: float = 8.0
    batch: int = BATCH
    writers: int = 2
    aof: bool = True
    cluster: bool = False  # 3 masters + 3 replicas (tests/support/redis_cluster.py)
    # OBJECT_TTL. Long by default: nothing expires, the write alone is measured. A short one
    # (--ttl 1) makes the server expire keys as fast as they are written (the churn regime).
    ttl: float = 3600.0


@dataclass(frozen=True)
class StoreFigures:
    run: StoreRun
    ids: int
    elapsed: float
    server_cpu: float  # the whole process, /proc/<pid>/stat
    main_thread_cpu: float  # INFO cpu, main thread only
    client_cpu: float
    script_usec: float  # INFO commandstats: inside EVALSHA
    script_calls: int
    set_calls: int
    aof_rewrites: int
    memory_per_key: float  # bytes, INFO memory used_memory delta / keys
    memory_usage_one: int  # bytes, MEMORY USAGE of one key
    expired: int = 0  # INFO stats expired_keys during the run
    replica_cpu: float = 0.0  # a cluster's replicas, /proc/<pid>/stat
    masters: int = 1

    @property
    def ids_per_s(self) -> float:
        return self.ids / self.elapsed

    def _per_id(self, amount: float) -> float:
        return amount / self.ids if self.ids else float("nan")

    @property
    def server_us_per_id(self) -> float:
        return self._per_id(1e6 * self.server_cpu)

    @property
    def main_thread_us_per_id(self) -> float:
        return self._per_id(1e6 * self.main_thread_cpu)

    @property
    def ids_per_core_s(self) -> float:
        """Ids stored per second of redis-server CPU (the whole process)."""
        return self.ids / self.server_cpu if self.server_cpu else float("nan")

    @property
    def replica_us_per_id(self) -> float:
        return self._per_id(1e6 * self.replica_cpu)

    @property
    def script_us_per_id(self) -> float:
        return self._per_id(self.script_usec)

    @property
    def client_us_per_id(self) -> float:
        return self._per_id(1e6 * self.client_cpu)


@dataclass(frozen=True)
class ClientFigures:
    """The consumer's side of a store's write alone: CPU of this process per stored id."""

    ids: int
    client_cpu: float

    @property
    def client_us_per_id(self) -> float:
        return 1e6 * self.client_cpu / self.ids if self.ids else float("nan")


async def write_new_ids(store: ObjectStore, run: StoreRun, first_id: int) -> int:
    """``run.writers`` writers sending batches of ``run.batch`` new ids to ``store.write`` back
    to back for ``run.seconds``; the ids stored."""
    next_id = first_id
    stored = 0
    deadline = time.monotonic() + run.seconds

    async def writer() -> None:
        nonlocal next_id, stored
        while time.monotonic() < deadline:
            start, next_id = next_id, next_id + run.batch
            now = datetime.now(UTC)
            written = await store.write(dict.fromkeys(range(start, start + run.batch), now))
            # Not ``stored += await ...``: that reads ``stored`` before the await, and
            # concurrent writers would lose each other's counts.
            stored += written

    await asyncio.gather(*(writer() for _ in range(run.writers)))
    return stored


async def measure_postgres(run: StoreRun, first_id: int = 0) -> ClientFigures:
    """The same writes through the consumer's ``PostgresStore.write`` (the ``unnest`` upsert)
    into a scratch database of the benchmark's PostgreSQL: this process's CPU per stored id,
    the part of the consumer's CPU that differs between ``STORE=postgres`` and ``STORE=redis``."""
    database = f"bench_store_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
        # The consumer's pool size is POSTGRES_POOL_SIZE; the writers use one connection each.
        pool = await asyncpg.create_pool(database_dsn(database), min_size=1, max_size=run.writers)
        try:
            await migrate(pool)
            store = PostgresStore(pool)
            await store.write({first_id - 1: datetime.now(UTC)})  # connections open, warm
            before = own_cpu_seconds()
            stored = await write_new_ids(store, run, first_id)
            client_cpu = own_cpu_seconds() - before
        finally:
            await pool.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()
    return ClientFigures(stored, client_cpu)


def _main_thread(info: dict[str, Any]) -> float:
    return float(info["used_cpu_sys_main_thread"]) + float(info["used_cpu_user_main_thread"])


async def measure(run: StoreRun, first_id: int = 0) -> StoreFigures:
    if run.cluster:
        return await measure_cluster(run, first_id)
    with tempfile.TemporaryDirectory(prefix="lastseen-redis-bench-") as folder:
        config = {} if run.aof else {"appendonly": "no"}
        server = RedisServer(Path(folder) / "redis", config=config).start()
        try:
            client = redis.asyncio.Redis(host="127.0.0.1", port=server.port)
            store = RedisStore(client, prefix="object:", ttl_seconds=run.ttl)
            await store.write({first_id - 1: datetime.now(UTC)})  # the script loaded, warm
            await client.config_resetstat()  # expired_keys too
            memory_before = int((await client.info("memory"))["used_memory"])
            rewrites_before = int((await client.info("persistence"))["aof_rewrites"])
            main_before = _main_thread(await client.info("cpu"))
            server_before, client_before = cpu_seconds(server.pid), own_cpu_seconds()
            began = time.monotonic()
            stored = await write_new_ids(store, run, first_id)
            elapsed = time.monotonic() - began
            server_cpu = cpu_seconds(server.pid) - server_before
            client_cpu = own_cpu_seconds() - client_before
            main_cpu = _main_thread(await client.info("cpu")) - main_before
            stats = await client.info("commandstats")
            memory_after = int((await client.info("memory"))["used_memory"])
            rewrites = int((await client.info("persistence"))["aof_rewrites"]) - rewrites_before
            expired = int((await client.info("stats"))["expired_keys"])
            one = int(await client.memory_usage(store.key(first_id)) or 0)
            await store.close()
        finally:
            server.remove()
    evalsha = stats.get("cmdstat_evalsha", {})
    return StoreFigures(
        run=run,
        ids=stored,
        elapsed=elapsed,
        server_cpu=server_cpu,
        main_thread_cpu=main_cpu,
        client_cpu=client_cpu,
        script_usec=float(evalsha.get("usec", 0)),
        script_calls=int(evalsha.get("calls", 0)),
        set_calls=int(stats.get("cmdstat_set", {}).get("calls", 0)),
        aof_rewrites=rewrites,
        memory_per_key=(memory_after - memory_before) / stored if stored else float("nan"),
        memory_usage_one=one,
        expired=expired,
    )


async def measure_cluster(run: StoreRun, first_id: int = 0) -> StoreFigures:
    """The same writes on a Redis Cluster of 3 masters and 3 replicas (AOF everysec on each):
    the keys of a batch are grouped by hash slot, one script call per slot, pipelined per node.
    CPU summed over the masters (and over the replicas apart); INFO figures summed likewise."""
    from redis.asyncio import RedisCluster
    from redis.asyncio.cluster import ClusterNode

    from tests.support.redis_cluster import RedisClusterNodes

    with tempfile.TemporaryDirectory(prefix="lastseen-redis-bench-") as folder:
        cluster = RedisClusterNodes(Path(folder)).start()
        try:
            client = RedisCluster(
                startup_nodes=[ClusterNode("127.0.0.1", n.port) for n in cluster.nodes]
            )
            store = RedisStore(client, prefix="object:", ttl_seconds=run.ttl)
            await store.write({first_id - 1: datetime.now(UTC)})
            masters = cluster.masters()
            replicas = [n for n in cluster.nodes if n not in masters]
            admins = [redis.asyncio.Redis(host="127.0.0.1", port=n.port) for n in masters]

            async def info(section: str) -> list[dict[str, Any]]:
                return [await admin.info(section) for admin in admins]

            for admin in admins:
                await admin.config_resetstat()
            memory_before = sum(int(i["used_memory"]) for i in await info("memory"))
            main_before = sum(_main_thread(i) for i in await info("cpu"))
            master_before = sum(cpu_seconds(n.server.pid) for n in masters)
            replica_before = sum(cpu_seconds(n.server.pid) for n in replicas)
            client_before = own_cpu_seconds()
            began = time.monotonic()
            stored = await write_new_ids(store, run, first_id)
            elapsed = time.monotonic() - began
            master_cpu = sum(cpu_seconds(n.server.pid) for n in masters) - master_before
            replica_cpu = sum(cpu_seconds(n.server.pid) for n in replicas) - replica_before
            client_cpu = own_cpu_seconds() - client_before
            main_cpu = sum(_main_thread(i) for i in await info("cpu")) - main_before
            stats = await info("commandstats")
            memory_after = sum(int(i["used_memory"]) for i in await info("memory"))
            one = int(await client.memory_usage(store.key(first_id)) or 0)
            for admin in admins:
                await admin.aclose()
            await store.close()
        finally:
            cluster.remove()

    def total(command: str, field: str) -> float:
        return sum(float(s.get(f"cmdstat_{command}", {}).get(field, 0)) for s in stats)

    return StoreFigures(
        run=run,
        ids=stored,
        elapsed=elapsed,
        server_cpu=master_cpu,
        main_thread_cpu=main_cpu,
        client_cpu=client_cpu,
        script_usec=total("evalsha", "usec"),
        script_calls=int(total("evalsha", "calls")),
        set_calls=int(total("set", "calls")),
        aof_rewrites=0,
        memory_per_key=(memory_after - memory_before) / stored if stored else float("nan"),
        memory_usage_one=one,
        replica_cpu=replica_cpu,
        masters=len(masters),
    )


async def repeats(run: StoreRun, count: int) -> list[StoreFigures]:
    return [await measure(run) for _ in range(count)]


async def against_postgres(
    run: StoreRun, count: int
) -> tuple[list[StoreFigures], list[ClientFigures]]:
    """``count`` Redis runs and as many PostgreSQL ones, alternating which goes first."""
    redis_runs: list[StoreFigures] = []
    postgres_runs: list[ClientFigures] = []
    for number in range(count):
        if number % 2:
            postgres_runs.append(await measure_postgres(run))
        redis_runs.append(await measure(run))
        if not number % 2:
            postgres_runs.append(await measure_postgres(run))
    return redis_runs, postgres_runs


def client_ratios(redis_runs: list[StoreFigures], postgres_runs: list[ClientFigures]) -> Spread:
    """The consumer's CPU per stored id for the write, Redis over PostgreSQL, per pair."""
    return Spread.of(
        r.client_us_per_id / p.client_us_per_id
        for r, p in zip(redis_runs, postgres_runs, strict=True)
    )


def print_figures(figures: list[StoreFigures]) -> None:
    run = figures[0].run
    where = f"a cluster of {figures[0].masters} masters + replicas" if run.cluster else "one node"
    print(
        f"{len(figures)} repeats, {run.seconds:g} s each, {run.writers} writers x batches of "
        f"{run.batch} new ids, AOF {'everysec' if run.aof else 'off'}, {where}"
    )
    rows: list[tuple[str, str, int]] = [
        ("ids stored per s (wall)", "ids_per_s", 0),
        ("ids per server CPU-second", "ids_per_core_s", 0),
        ("server CPU per id (process), us", "server_us_per_id", 2),
        ("server CPU per id (main thread), us", "main_thread_us_per_id", 2),
        ("inside EVALSHA per id (wall), us", "script_us_per_id", 2),
        ("replicas' CPU per id (cluster), us", "replica_us_per_id", 2),
        ("client CPU per id, us", "client_us_per_id", 2),
        ("used_memory per key, bytes", "memory_per_key", 0),
    ]
    for label, attribute, digits in rows:
        spread = Spread.of(getattr(f, attribute) for f in figures)
        print(f"  {label:<38} {spread.label(digits)}")
    print(
        f"  MEMORY USAGE of one key: {figures[0].memory_usage_one} bytes; ids per run: "
        + ", ".join(f"{f.ids:,}" for f in figures)
        + "; AOF rewrites during the runs: "
        + ", ".join(str(f.aof_rewrites) for f in figures)
        + "; keys expired during the runs: "
        + ", ".join(f"{f.expired:,}" for f in figures)
        + "; script calls per id: "
        + ", ".join(f"{f.script_calls / f.ids:.3f}" for f in figures if f.ids)
    )


def print_against_postgres(
    redis_runs: list[StoreFigures], postgres_runs: list[ClientFigures]
) -> None:
    postgres = Spread.of(p.client_us_per_id for p in postgres_runs)
    print(f"  client CPU per id, PostgreSQL, us       {postgres.label(2)}")
    ratios = client_ratios(redis_runs, postgres_runs)
    print(f"  client CPU per id, Redis / PostgreSQL   {ratios.label(2, 'x')}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.redis_store_bench")
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-aof", action="store_true", help="appendonly no (memory only)")
    parser.add_argument("--cluster", action="store_true", help="3 masters + 3 replicas")
    parser.add_argument(
        "--ttl", type=float, default=3600.0, help="OBJECT_TTL, s (1: keys expire as they come)"
    )
    parser.add_argument(
        "--against-postgres",
        action="store_true",
        help="alternate each run with the same writes through PostgresStore (client CPU per id)",
    )
    args = parser.parse_args()
    run = StoreRun(args.seconds, args.batch, args.writers, not args.no_aof, args.cluster, args.ttl)
    if args.against_postgres:
        redis_runs, postgres_runs = asyncio.run(against_postgres(run, args.repeats))
        print_figures(redis_runs)
        print_against_postgres(redis_runs, postgres_runs)
    else:
        print_figures(asyncio.run(repeats(run, args.repeats)))


if __name__ == "__main__":
    main()
