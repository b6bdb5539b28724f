"""Capacity plan: measure what each part of the suite costs on this machine, extrapolate to
10 k, 100 k and 1 M ids/s, and write docs/SCALING.md.

    python -m bench.capacity                 # full run (about 4 minutes): docs/SCALING.md
    python -m bench.capacity --smoke         # seconds: every measurement, tiny, prints the plan
    python -m bench.capacity --smoke --write /tmp/SCALING.md

Measured here, each as CPU time of the process that does the work (from /proc/<pid>/stat) over a
window, divided by the work done in that window:

* consumer: CPU per id at the real 0.3-4.3 s status delays, through ``bench.consumer_bench``
  (one real ``python -m consumer``, a stand-in status API with the tester's delay distribution,
  ids that never repeat), and the ids/s one process serves with MAX_CONSUMERS in flight;
* PostgreSQL: rows upserted per core-second through the consumer's own ``BatchWriter`` (several
  writers at once, 500-row batches), in two regimes: *refresh* (every id already stored: the
  tester's pattern, where an object reports every few seconds) and *churn* (every id new, and the
  real ``python -m routine`` deleting each row OBJECT_TTL later); WAL bytes per row from
  ``EXPLAIN (ANALYZE, WAL)``; table + index bytes per row;
* RabbitMQ: persistent messages of the default size (IDS_PER_MESSAGE=200 ids) published with
  confirms to the quorum work queue, delivered and acked, per core-second of the broker process,
  less the broker's idle CPU measured just before;
* producer: 202-answered callbacks of 200 distinct ids per core-second of one ``python -m
  producer`` (confirmed by the broker, not spooled), and its peak RSS.

Everything else in docs/SCALING.md is arithmetic on those figures under the assumptions it
states. The machine is shared: broker and database serve other users at the same time, so the
broker and database figures are upper bounds on cost (conservative for planning).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import asyncpg
import orjson

from bench.capacity_plan import (
    CONSUMER_MAX_CONSUMERS,
    IDS_PER_MESSAGE,
    Measured,
    keep_hand_written,
    render,
)
from bench.consumer_bench import Bench, ConsumerRun
from bench.measure import ADMIN_DSN, AMQP_URI, ROOT, cpu_seconds, vm_hwm_mb
from common.amqp import RETRY_TIERS_MS, Topology, declare_topology
from common.db import migrate
from common.messages import IdsMessage
from common.store.postgres import PostgresStore
from consumer.batch_writer import BatchWriter

SCALING_MD = ROOT / "docs" / "SCALING.md"


@dataclass
class Profile:
    """How long and how hard each measurement runs."""

    consumer_rate: float
    consumer_max_consumers: int
    consumer_duration: float
    consumer_warmup: float
    delay_min: float
    delay_max: float
    pg_seconds: float
    pg_writers: int
    pg_id_space: int
    broker_seconds: float
    producer_seconds: float
    producer_connections: int


FULL = Profile(
    consumer_rate=3000,
    consumer_max_consumers=CONSUMER_MAX_CONSUMERS,
    consumer_duration=60,
    consumer_warmup=10,
    delay_min=0.3,
    delay_max=4.3,
    pg_seconds=20,
    pg_writers=4,
    pg_id_space=200_000,
    broker_seconds=20,
    producer_seconds=20,
    producer_connections=32,
)
# Seconds-long, for CI: every code path, figures not meant to be planned with (short delays).
SMOKE = Profile(
    consumer_rate=300,
    consumer_max_consumers=500,
    consumer_duration=2,
    consumer_warmup=1,
    delay_min=0.05,
    delay_max=0.3,
    pg_seconds=1.0,
    pg_writers=2,
    pg_id_space=5_000,
    broker_seconds=1.0,
    producer_seconds=1.0,
    producer_connections=4,
)


# --- CPU accounting -------------------------------------------------------------------------------


class CpuMeter:
    """CPU seconds spent by a changing set of processes between ``start`` and ``stop``.

    A process that appears meanwhile counts with all its CPU (it started in the window); one that
    disappears before ``stop`` is lost, which can only make a figure look cheaper by the share
    of short-lived processes (none here but autovacuum workers).
    """

    def __init__(self, pids: Callable[[], Awaitable[set[int]]]) -> None:
        self._pids = pids
        self._start: dict[int, float] = {}
        self._t0 = 0.0

    async def start(self) -> None:
        self._start = _cpu_of(await self._pids())
        self._t0 = time.monotonic()

    async def stop(self) -> tuple[float, float]:
        """(CPU seconds, wall seconds) since :meth:`start`."""
        end = _cpu_of(await self._pids())
        used = sum(cpu - self._start.get(pid, 0.0) for pid, cpu in end.items())
        return used, time.monotonic() - self._t0


def _cpu_of(pids: set[int]) -> dict[int, float]:
    found = {}
    for pid in pids:
        try:
            found[pid] = cpu_seconds(pid)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def broker_pid(port: int = 5672) -> int | None:
    """The process listening on the broker's AMQP port (the shared RabbitMQ's beam.smp)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            parts = line.split()
            if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(parts[9])
    targets = {f"socket:[{inode}]" for inode in inodes}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) in targets:
                    return int(proc.name)
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
    return None


# --- consumer -------------------------------------------------------------------------------------


async def measure_consumer(profile: Profile) -> dict[str, float]:
    run = ConsumerRun(
        max_consumers=profile.consumer_max_consumers,
        rate=profile.consumer_rate,
        duration=profile.consumer_duration,
        warmup=profile.consumer_warmup,
        ids_per_message=IDS_PER_MESSAGE,
        delay_min=profile.delay_min,
        delay_max=profile.delay_max,
    )
    measured = await Bench(run).run()
    consumer = measured.costs["consumer"]
    return {
        "ids_per_s": measured.rate,
        "cpu_ms_per_id": consumer.cpu_ms_per_id,
        "peak_rss_mb": consumer.peak_rss_mb,
        "peak_in_flight": float(measured.peak_in_flight),
        "max_backlog_messages": float(measured.max_backlog),
        "window_s": measured.window,
        "offered_ids_per_s": profile.consumer_rate,
        "max_consumers": float(profile.consumer_max_consumers),
    }


# --- PostgreSQL -----------------------------------------------------------------------------------


class PostgresBench:
    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.database = f"bench_capacity_{uuid.uuid4().hex[:8]}"
        self.dsn = ADMIN_DSN.rsplit("/", 1)[0] + f"/{self.database}"

    async def run(self) -> dict[str, float]:
        admin = await asyncpg.connect(ADMIN_DSN)
        await admin.execute(f'CREATE DATABASE "{self.database}"')
        pool = await asyncpg.create_pool(
            self.dsn, min_size=self.profile.pg_writers, max_size=self.profile.pg_writers
        )
        try:
            await migrate(pool)
            figures = await self.refresh(pool, admin)
            figures.update(await self.churn(pool, admin))
            return figures
        finally:
            await pool.close()
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            await admin.close()

    def meter(self, admin: asyncpg.Connection, background: bool) -> CpuMeter:
        async def pids() -> set[int]:
            rows = await admin.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 OR ($2 AND backend_type IN "
                "('walwriter', 'checkpointer', 'background writer', 'autovacuum worker'))",
                self.database,
                background,
            )
            return {row["pid"] for row in rows}

        return CpuMeter(pids)

    async def write_for(
        self, pool: asyncpg.Pool, seconds: float, next_ids: Callable[[], list[int]]
    ) -> int:
        """Upsert batches of 500 rows through BatchWriters, one per writer, for ``seconds``."""
        written = 0

        async def one_writer() -> None:
            nonlocal written
            stored = asyncio.Event()

            class Listener:
                def on_stored(self, owners: list[int]) -> None:
                    stored.set()

                def on_health(self, healthy: bool) -> None:
                    pass

            writer: BatchWriter[int] = BatchWriter(
                PostgresStore(pool), max_rows=500, max_delay=0.05
            )
            task = asyncio.create_task(writer.run(Listener()))
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                stored.clear()
                now = datetime.now(UTC)
                for object_id in next_ids():
                    writer.add(object_id, now, 0)
                await stored.wait()
            writer.close(time.monotonic() + 30)
            await task
            written += writer.rows_written

        await asyncio.gather(*(one_writer() for _ in range(self.profile.pg_writers)))
        return written

    async def refresh(self, pool: asyncpg.Pool, admin: asyncpg.Connection) -> dict[str, float]:
        """Every row already exists: each upsert moves last_seen forward (the steady state of
        objects that report every few seconds)."""
        space = self.profile.pg_id_space
        await pool.execute(
            "INSERT INTO object SELECT g, now() FROM generate_series(0, $1 - 1) g", space
        )
        await pool.execute("VACUUM ANALYZE object")
        cursor = 0

        def next_ids() -> list[int]:
            nonlocal cursor
            ids = [(cursor + i) % space for i in range(500)]
            cursor = (cursor + 500) % space
            return ids

        backends, everything = self.meter(admin, False), self.meter(admin, True)
        await backends.start()
        await everything.start()
        rows = await self.write_for(pool, self.profile.pg_seconds, next_ids)
        backend_cpu, wall = await backends.stop()
        all_cpu, _ = await everything.stop()
        wal = await self.wal_per_row(pool, [(cursor + i) % space for i in range(500)])
        size = await pool.fetchval("SELECT pg_total_relation_size('object')")
        count = await pool.fetchval("SELECT count(*) FROM object")
        return {
            "refresh_rows_per_s": rows / wall,
            "refresh_rows_per_core_backends": rows / max(backend_cpu, 1e-9),
            "refresh_rows_per_core": rows / max(all_cpu, 1e-9),
            "refresh_wal_bytes_per_row": wal,
            "bytes_per_row": size / max(count, 1),
        }

    async def churn(self, pool: asyncpg.Pool, admin: asyncpg.Connection) -> dict[str, float]:
        """Every id is new, and the real routine deletes each row a short TTL later: one insert
        and one delete per row, the cost of ids that do not repeat within OBJECT_TTL."""
        await pool.execute("TRUNCATE object")
        next_id = 10**12

        def next_ids() -> list[int]:
            nonlocal next_id
            ids = list(range(next_id, next_id + 500))
            next_id += 500
            return ids

        ttl = max(0.5, self.profile.pg_seconds / 4)
        routine = start_routine(self.database, ttl=ttl, interval=ttl / 4)
        try:
            await wait_until(lambda: routine_connected(admin, self.database, pool), 20)
            wal = await self.wal_per_row(pool, list(range(1, 501)))
            everything = self.meter(admin, True)
            await everything.start()
            rows = await self.write_for(pool, self.profile.pg_seconds, next_ids)
            # The window runs until the routine has deleted every row: the CPU then covers one
            # insert and one delete per row, whether or not the routine kept up meanwhile.
            await asyncio.sleep(ttl)
            behind = int(await pool.fetchval("SELECT count(*) FROM object"))
            caught_up_from = time.monotonic()
            await wait_until(lambda: _empty(pool), 30 + self.profile.pg_seconds * 10)
            catch_up = time.monotonic() - caught_up_from
            all_cpu, wall = await everything.stop()
            rss = vm_hwm_mb(routine.pid)
        finally:
            routine.terminate()
            try:
                routine.wait(timeout=30)
            except subprocess.TimeoutExpired:
                routine.kill()
                raise SystemExit("the routine did not stop within 30 s of SIGTERM") from None
        if routine.returncode != 0:
            raise SystemExit(f"routine exited with {routine.returncode}")
        return {
            "churn_rows_per_s": rows / self.profile.pg_seconds,
            "churn_rows_per_core": rows / max(all_cpu, 1e-9),
            "churn_wal_bytes_per_row": wal,
            # Rows still there one TTL after the writers stopped: what the routine had not yet
            # deleted. Their deletion time gives one routine's delete rate (it holds the lock
            # alone), measured only when the backlog was big enough to time.
            "routine_backlog_rows": float(behind),
            "routine_kept_up": float(behind < 50_000),
            "routine_delete_rows_per_s": (
                behind / catch_up if behind >= 50_000 else rows / self.profile.pg_seconds
            ),
            "routine_peak_rss_mb": rss,
            "churn_ttl_s": ttl,
            "churn_window_s": wall,
        }

    async def wal_per_row(self, pool: asyncpg.Pool, ids: list[int]) -> float:
        """WAL bytes one 500-row upsert writes, per row, from EXPLAIN (ANALYZE, WAL)."""
        now = datetime.now(UTC)
        async with pool.acquire() as connection:
            transaction = connection.transaction()
            await transaction.start()
            plan = await connection.fetchval(
                "EXPLAIN (ANALYZE, WAL, FORMAT JSON) "
                "INSERT INTO object (id, last_seen) "
                "SELECT * FROM unnest($1::bigint[], $2::timestamptz[]) "
                "ON CONFLICT (id) DO UPDATE SET last_seen = "
                "GREATEST(object.last_seen, EXCLUDED.last_seen) "
                "WHERE object.last_seen < EXCLUDED.last_seen",
                ids,
                [now] * len(ids),
            )
            await transaction.rollback()  # measured, not kept
        return float(orjson.loads(plan)[0]["Plan"]["WAL Bytes"]) / len(ids)


def start_routine(database: str, ttl: float, interval: float) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "POSTGRES_HOST": "127.0.0.1",
        "POSTGRES_DB": database,
        "POSTGRES_USER": "postgres",
        "OBJECT_TTL": str(ttl),
        "ROUTINE_INTERVAL": str(interval),
        "LOG_LEVEL": "warning",
        "LOG_FORMAT": "json",
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "routine"],
        cwd=tempfile.gettempdir(),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def routine_connected(admin: asyncpg.Connection, database: str, pool: asyncpg.Pool) -> bool:
    connections = await admin.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND backend_type = "
        "'client backend'",
        database,
    )
    return bool(int(connections) > pool.get_size())


async def _empty(pool: asyncpg.Pool) -> bool:
    return not await pool.fetchval("SELECT EXISTS (SELECT 1 FROM object)")


async def wait_until(condition: Callable[[], Awaitable[bool]], within: float) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up after {within}s waiting for {condition}")
        await asyncio.sleep(0.1)


# --- RabbitMQ -------------------------------------------------------------------------------------


def default_message() -> bytes:
    """A work message as the producer makes it by default: 200 ids of realistic width."""
    ids = list(range(4_000_000_000, 4_000_000_000 + IDS_PER_MESSAGE))
    return IdsMessage(str(uuid.uuid4()), datetime.now(UTC), ids).encode()


async def measure_broker(profile: Profile) -> dict[str, float]:
    pid = broker_pid()
    if pid is None:
        raise SystemExit("no process listens on :5672 here; cannot measure the broker")
    queue = f"bench_capacity_{uuid.uuid4().hex[:8]}"
    body = default_message()
    publisher = await aio_pika.connect(AMQP_URI)
    drainer = await aio_pika.connect(AMQP_URI)
    try:
        channel = await publisher.channel(publisher_confirms=True)
        await declare_topology(channel, queue)
        consume_channel = await drainer.channel()
        await consume_channel.set_qos(prefetch_count=500)
        work = await consume_channel.get_queue(queue)
        delivered = 0

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal delivered
            await message.ack()
            delivered += 1

        idle = CpuMeter(_fixed({pid}))
        await idle.start()
        await asyncio.sleep(min(2.0, profile.broker_seconds))
        idle_cpu, idle_wall = await idle.stop()
        tag = await work.consume(on_message)
        meter = CpuMeter(_fixed({pid}))
        await meter.start()
        confirmed = 0
        deadline = time.monotonic() + profile.broker_seconds
        while time.monotonic() < deadline:
            await asyncio.gather(
                *(
                    channel.default_exchange.publish(
                        aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                        routing_key=queue,
                    )
                    for _ in range(100)
                )
            )
            confirmed += 100
        await wait_until(_reached(lambda: delivered, confirmed), 60)
        cpu, wall = await meter.stop()
        busy = max(cpu - idle_cpu / idle_wall * wall, 1e-9)
        await work.cancel(tag)
    finally:
        await drainer.close()
        await publisher.close()
        await delete_topology(queue)
    return {
        "messages_per_s": confirmed / wall,
        "messages_per_core": confirmed / busy,
        "message_bytes": float(len(body)),
        "idle_cores": idle_cpu / idle_wall,
    }


def _fixed(pids: set[int]) -> Callable[[], Awaitable[set[int]]]:
    async def get() -> set[int]:
        return pids

    return get


def _reached(value: Callable[[], int], target: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return value() >= target

    return check


# --- producer -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def measure_producer(profile: Profile) -> dict[str, float]:
    queue = f"bench_capacity_{uuid.uuid4().hex[:8]}"
    port = free_port()
    with tempfile.TemporaryDirectory() as spool_dir:
        env = {
            **os.environ,
            "AMQP_URI": AMQP_URI,
            "QUEUE_NAME": queue,
            "PRODUCER_HOST": "127.0.0.1",
            "PRODUCER_PORT": str(port),
            "SPOOL_PATH": str(Path(spool_dir) / "spool.sqlite3"),
            "LOG_LEVEL": "warning",
            "LOG_FORMAT": "json",
            "PYTHONPATH": str(ROOT),
        }
        process = subprocess.Popen(  # noqa: ASYNC220 - started once, before any measurement
            [sys.executable, "-m", "producer"],
            cwd=spool_dir,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        connection = await aio_pika.connect(AMQP_URI)
        try:
            async with aiohttp.ClientSession() as http:
                base = f"http://127.0.0.1:{port}"
                await wait_until(_ready(http, base), 30)
                channel = await connection.channel()
                await declare_topology(channel, queue)
                drain = await channel.get_queue(queue)
                await channel.set_qos(prefetch_count=1000)

                async def ack(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                    await message.ack()

                tag = await drain.consume(ack)
                figures = await _drive_producer(http, base, process.pid, profile)
                await drain.cancel(tag)
            figures["peak_rss_mb"] = vm_hwm_mb(process.pid)
        finally:
            await connection.close()
            process.terminate()
            process.wait(timeout=30)
            await delete_topology(queue)
    return figures


async def delete_topology(queue: str) -> None:
    """Delete a bench queue's topology on a connection of its own, so that it also runs after
    the measurement's connection died (a broker restarted by someone else on a shared machine)."""
    topology = Topology(queue)
    connection = await aio_pika.connect(AMQP_URI)
    try:
        channel = await connection.channel()
        for name in [topology.work, topology.dead, *map(topology.retry, RETRY_TIERS_MS)]:
            await channel.queue_delete(name)
    finally:
        await connection.close()


def _ready(http: aiohttp.ClientSession, base: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        try:
            async with http.get(base + "/ready") as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    return check


async def _drive_producer(
    http: aiohttp.ClientSession, base: str, pid: int, profile: Profile
) -> dict[str, float]:
    bodies = [
        orjson.dumps({"object_ids": list(range(n * 1000, n * 1000 + IDS_PER_MESSAGE))})
        for n in range(64)
    ]
    answered = spooled = failed = 0
    stop_at = time.monotonic() + profile.producer_seconds

    async def client(index: int) -> None:
        nonlocal answered, spooled, failed
        n = index
        while time.monotonic() < stop_at:
            n += 1
            async with http.post(
                base + "/callback",
                data=bodies[n % len(bodies)],
                headers={"content-type": "application/json"},
            ) as response:
                body = await response.read()
            if response.status == 202:
                answered += 1
                spooled += bool(orjson.loads(body)["spooled"])
            else:
                failed += 1

    cpu_0, t_0 = cpu_seconds(pid), time.monotonic()
    await asyncio.gather(*(client(i) for i in range(profile.producer_connections)))
    cpu, wall = cpu_seconds(pid) - cpu_0, time.monotonic() - t_0
    if failed:
        raise SystemExit(f"{failed} callbacks failed during the producer measurement")
    return {
        "callbacks_per_s": answered / wall,
        "callbacks_per_core": answered / max(cpu, 1e-9),
        "spooled_fraction": spooled / max(answered, 1),
    }


async def measure(profile: Profile) -> Measured:
    measured = Measured()
    steps: list[tuple[str, Callable[[], Awaitable[dict[str, float]]]]] = [
        ("consumer", lambda: measure_consumer(profile)),
        ("postgres", lambda: PostgresBench(profile).run()),
        ("broker", lambda: measure_broker(profile)),
        ("producer", lambda: measure_producer(profile)),
    ]
    for name, step in steps:
        print(f"== {name}", flush=True)
        started = time.monotonic()
        figures = await step()
        setattr(measured, name, figures)
        print(f"   {name} ({time.monotonic() - started:.1f} s): {figures}", flush=True)
    return measured


def main(argv: list[str] | None = None) -> Any:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="seconds-long run (CI)")
    parser.add_argument(
        "--write",
        type=Path,
        help=f"write the plan here (default: {SCALING_MD.relative_to(ROOT)} for a full run; "
        "a smoke run writes nowhere unless told)",
    )
    args = parser.parse_args(argv)
    profile, name = (SMOKE, "smoke") if args.smoke else (FULL, "full")
    command = "python -m bench.capacity" + (" --smoke" if args.smoke else "")
    measured = asyncio.run(measure(profile))
    text = render(measured, name, command)
    print(text)
    target = args.write or (None if args.smoke else SCALING_MD)
    if target is not None:
        previous = target.read_text() if target.exists() else ""
        target.write_text(keep_hand_written(text, previous))
        print(f"written: {target}")
    return measured


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
