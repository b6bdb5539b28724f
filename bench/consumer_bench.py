"""Consumer benchmark: throughput at a given MAX_CONSUMERS, keeping up with an offered rate, the
pipeline overhead per stored row, and overload.

Runs everything as real processes on this machine: RabbitMQ and PostgreSQL (the local ones), a
status API with the tester's delay distribution (``bench.consumer_status_server``), one
``python -m consumer``, and this script as the producer (publishing ``IdsMessage`` JSON, 100 ids
per message by default) or, with ``--via-producer``, a real ``python -m producer`` that this script
sends 200-id callbacks to, open loop, with the tester's 1 s client timeout. Ids never repeat, so
single-flight cannot flatter the figures.

    # saturation: a backlog bigger than the run, how many ids/s does one process do?
    python -m bench.consumer_bench saturate --max-consumers 2000 --duration 60
    # load: offer 3,000 ids/s for 60 s; CPU per id, peak RSS, freshness, pipeline overhead
    python -m bench.consumer_bench load --max-consumers 8000 --rate 3000 --duration 60
    # the same with STORE=redis (a redis-server of the run's own; its CPU per id is printed)
    python -m bench.consumer_bench load --store redis --max-consumers 8000 --rate 3000
    # the same with BROKER=pubsub: Google's emulator of the run's own (NOT the service: its
    # publish answers in about a millisecond, the service's in tens), the load published to it
    python -m bench.consumer_bench load --broker pubsub --max-consumers 8000 --rate 3000

Definitions (printed with the figures):
* ids/s: status lookups answered per second (the status API's own count), over the measured
  window, which starts after a warm-up.
* CPU per id: a process's user+system CPU time over the window (from /proc/<pid>/stat), divided
  by the ids finished in that window.
* peak RSS: VmHWM of the process (/proc/<pid>/status) at the end of the run.
* freshness, answered: ``last_seen - received`` per stored row: from the moment the callback was
  received (here: sent by this script) to the moment the status API answered online.
* pipeline overhead: ``commit - received - delay(id)`` per stored row, where ``commit`` is when the
  row became visible (``bench.commit_clock``: transaction snapshots every 5 ms) and ``delay(id)``
  the status API's own answer delay for that id (``consumer_status_server.status_delay``): what
  the suite adds to the unavoidable wait — queueing, HTTP, batching, the commit.
* Figures are for rows received in the measured window (the steady state).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import asyncpg
import orjson

from bench.commit_clock import CommitClock
from bench.consumer_status_server import status_delay
from bench.measure import (
    ADMIN_DSN,
    AMQP_URI,
    ROOT,
    CpuMeter,
    cpu_seconds,
    database_dsn,
    machine,
    percentile,
    postgres_env,
    vm_hwm_mb,
    vm_rss_mb,
)
from bench.verdicts import Spread, at, common_quantile
from common.amqp import RETRY_TIERS_MS, Topology, declare_topology
from common.broker.pubsub_topology import PubSubSettings, PubSubTopology
from common.db import migrate
from common.messages import IdsMessage
from tests.support.pubsub_emulator import (
    EmulatorMissing,
    PubSubEmulator,
    find_emulator,
    running_emulator,
)
from tests.support.redis_server import RedisServer

FIRST_ID = 1_000_000_000
PUBSUB_PROJECT = "lastseen-bench"
MESSAGE_ID_ATTRIBUTE = "message_id"  # the producer's (producer.pubsub_publisher)
IDS_PER_CALLBACK = 200
CALLBACK_TIMEOUT = 1.0  # the tester's client timeout: a slower answer is a missed callback
Progress = Callable[[str], None]


# The measured window in parts: repeats of its figures within one run, for a median and a range.
PARTS = 3


@dataclass
class ConsumerRun:
    """One consumer process under one load. ``rate=0``: saturate (a backlog queued first)."""

    max_consumers: int = 2000
    rate: float = 0.0
    backlog: int = 0
    duration: float = 60.0
    warmup: float = 10.0
    ids_per_message: int = 100
    delay_min: float = 0.3
    delay_max: float = 4.3
    batch_rows: int = 500
    batch_delay: str = "50ms"
    status_client: str = "httptools"  # STATUS_CLIENT: httptools | standard
    via_producer: bool = False  # callbacks to a real producer instead of publishing directly
    consumer_nice: int = 0
    track_commits: bool = False
    drain: bool = False  # after the window, stop offering and time the backlog's drain
    drain_timeout: float = 600.0
    profile_seconds: float = 0.0  # py-spy the consumer this long after the window (load goes on)
    profile_path: Path | None = None
    cprofile_path: str | None = None
    broker_status: Callable[[], dict[str, object]] | None = None  # sampled during the window
    store: str = "postgres"  # STORE: postgres | redis (a redis-server of the run's own)
    read_back: bool = True  # after the window, read the stored rows (freshness, overhead)
    broker: str = "rabbitmq"  # BROKER: rabbitmq | pubsub (Google's emulator, not the service)

    @property
    def saturate(self) -> bool:
        return self.rate <= 0

    @property
    def ceiling(self) -> float:
        """Little's law: MAX_CONSUMERS in flight at the mean delay."""
        return self.max_consumers / ((self.delay_min + self.delay_max) / 2)


@dataclass
class ServiceCost:
    cpu_seconds: float = 0.0
    cpu_ms_per_id: float = float("nan")
    peak_rss_mb: float = float("nan")


@dataclass
class ConsumerFigures:
    run: ConsumerRun
    window: float = 0.0
    ids_done: int = 0
    rate: float = 0.0
    max_backlog: int = 0
    peak_in_flight: int = 0
    costs: dict[str, ServiceCost] = field(default_factory=dict)
    rss_samples: list[tuple[float, float]] = field(default_factory=list)  # (t, MB) consumer
    timeline: list[tuple[float, float, int]] = field(default_factory=list)  # (t, ids/s, backlog)
    freshness: list[float] = field(default_factory=list)  # answered - received, s
    overhead: list[float] = field(default_factory=list)  # commit - received - delay, s
    overhead_at: list[float] = field(default_factory=list)  # received, s into the window
    # (t, the consumer's CPU seconds so far, ids served so far), once a second in the window
    cpu_timeline: list[tuple[float, float, int]] = field(default_factory=list)
    overhead_lower: list[float] = field(default_factory=list)  # same, from the bracket's start
    # The overhead in two parts: up to the answer (delivery, queueing for a slot, HTTP, the
    # status API's own lag) and after it (batching, the commit).
    to_answer: list[float] = field(default_factory=list)  # last_seen - received - delay
    to_commit: list[float] = field(default_factory=list)  # commit - last_seen
    commit_uncertainty: list[float] = field(default_factory=list)  # width of each commit bracket
    callbacks_sent: int = 0
    callbacks_failed: int = 0
    callbacks_spooled: int = 0
    producer_states: set[str] = field(default_factory=set)  # broker states /ready reported
    callback_latency: list[float] = field(default_factory=list)  # s
    drain_backlog_ids: int = 0
    drain_seconds: float = float("nan")
    broker_samples: list[dict[str, object]] = field(default_factory=list)
    profile_path: Path | None = None
    profile_cpu_seconds: float = float("nan")  # the consumer's CPU while py-spy sampled it

    @property
    def drain_rate(self) -> float:
        return self.drain_backlog_ids / self.drain_seconds if self.drain_seconds else float("nan")

    def cpu_ms_per_id_by_part(self, parts: int) -> list[float]:
        """The consumer's CPU per id in each of ``parts`` equal parts of the window: repeats
        of the measurement within one run, for a median and a range."""
        points = self.cpu_timeline
        if len(points) < parts + 1:
            return []
        step = (len(points) - 1) / parts
        edges = [points[round(i * step)] for i in range(parts + 1)]
        return [
            1000 * (b[1] - a[1]) / (b[2] - a[2])
            for a, b in itertools.pairwise(edges)
            if b[2] > a[2]
        ]

    def overhead_by_part(self, parts: int) -> list[list[float]]:
        """The stored rows' overhead, split by when their callback was received."""
        length = self.window / parts if parts else 0.0
        split: list[list[float]] = [[] for _ in range(parts)]
        for received, value in zip(self.overhead_at, self.overhead, strict=True):
            if length > 0 and 0 <= received < self.window:
                split[min(parts - 1, int(received / length))].append(value)
        return split


class CallbackLoad:
    """Open-loop 200-id callbacks to the producer: callback *i* is due at ``start + i / rate``; a
    non-2xx answer or one slower than the tester's 1 s timeout counts as missed."""

    def __init__(self, url: str, ids: Callable[[], list[int]]) -> None:
        self.url = url
        self.ids = ids
        self.sent = 0
        self.failed = 0
        self.spooled = 0  # answered 2xx from the producer's local spool (broker slow or away)
        self.failed_ids = 0  # ids of failed callbacks: maybe never enqueued
        self.latencies: list[float] = []
        self.measuring = False

    async def run(self, rate: float, stop: asyncio.Event) -> None:
        connector = aiohttp.TCPConnector(limit=512)
        timeout = aiohttp.ClientTimeout(total=CALLBACK_TIMEOUT)
        headers = {"Content-Type": "application/json"}
        tasks: set[asyncio.Task[None]] = set()
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

            async def one(due: float, body: bytes, measured: bool) -> None:
                try:
                    async with session.post(self.url, data=body, headers=headers) as response:
                        answer = await response.read()
                        ok = response.status < 300
                        if ok and b'"spooled":true' in answer:
                            self.spooled += 1
                except (aiohttp.ClientError, TimeoutError):
                    ok = False
                if not ok:
                    self.failed += 1
                    self.failed_ids += IDS_PER_CALLBACK
                elif measured:
                    self.latencies.append(time.perf_counter() - due)

            interval = IDS_PER_CALLBACK / rate
            start = time.perf_counter()
            while not stop.is_set():
                due = start + self.sent * interval
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                ids = self.ids()
                task = asyncio.create_task(
                    one(due, orjson.dumps({"object_ids": ids}), self.measuring)
                )
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                self.sent += 1
            if tasks:
                await asyncio.gather(*tasks)


async def delete_topology(queue: str) -> None:
    """On a fresh connection: the run's may have been closed by the broker."""
    connection = await aio_pika.connect(AMQP_URI)
    try:
        channel = await connection.channel()
        topology = Topology(queue)
        for name in [topology.work, topology.dead, *map(topology.retry, RETRY_TIERS_MS)]:
            await channel.queue_delete(name)
    finally:
        await connection.close()


def launcher() -> Path:
    """The emulator's launcher, or exit with the one line saying where it was looked for."""
    try:
        return find_emulator()
    except EmulatorMissing as error:
        raise SystemExit(str(error)) from None


class PubSubLoad:
    """The work topology on the emulator at ``host`` and a publisher to its topic (the
    producer's message format: the body of :class:`IdsMessage`, its id as an attribute)."""

    def __init__(self, host: str, queue: str) -> None:
        self.settings = PubSubSettings(PUBSUB_PROJECT, host)
        self.topology = PubSubTopology.for_queue(PUBSUB_PROJECT, queue)
        self.publisher: Any = None

    async def start(self) -> None:
        from common.broker.pubsub_clients import ensure, publisher_client

        await ensure(self.settings, self.topology, call_timeout=30)
        self.publisher = await asyncio.to_thread(publisher_client, self.settings)

    async def publish(self, body: bytes, message_id: str) -> None:
        future = self.publisher.publish(
            self.topology.topic, body, **{MESSAGE_ID_ATTRIBUTE: message_id}
        )
        await asyncio.wrap_future(future)

    async def remove(self) -> None:
        """Stop the publisher, then delete the topology (the emulator may serve other runs)."""
        from common.broker.pubsub_clients import publisher_client, subscriber_client

        def remove() -> None:
            if self.publisher is not None:
                self.publisher.stop()
                self.publisher.transport.close()
            publisher, subscriber = (
                publisher_client(self.settings),
                subscriber_client(self.settings),
            )
            try:
                for subscription in (
                    self.topology.work_subscription,
                    self.topology.dead_subscription,
                ):
                    with contextlib.suppress(Exception):  # never created: nothing to delete
                        subscriber.delete_subscription(subscription=subscription, timeout=30)
                for topic in (self.topology.topic, self.topology.dead_topic):
                    with contextlib.suppress(Exception):
                        publisher.delete_topic(topic=topic, timeout=30)
            finally:
                publisher.transport.close()
                subscriber.close()

        await asyncio.to_thread(remove)


class Bench:
    def __init__(
        self,
        run: ConsumerRun,
        progress: Progress | None = None,
        emulator: PubSubEmulator | None = None,
    ) -> None:
        """``emulator``: with ``run.broker == "pubsub"``, a started emulator to use (its CPU is
        measured too); None: the run starts one of its own."""
        if run.broker not in ("rabbitmq", "pubsub"):
            raise SystemExit(f"broker must be rabbitmq or pubsub, not {run.broker!r}")
        if run.broker == "pubsub" and (run.saturate or run.via_producer):
            raise SystemExit(
                "broker pubsub: load mode only, published directly (no backlog, no producer)"
            )
        self.run_config = run
        self.emulator = emulator
        self.pubsub: PubSubLoad | None = None
        self.progress = progress or (lambda _text: None)
        tag = uuid.uuid4().hex[:8]
        self.queue = f"bench_consumer_{tag}"
        self.database = f"bench_consumer_{tag}"
        self.workdir = Path(tempfile.mkdtemp(prefix="bench_consumer_"))
        self.next_id = FIRST_ID
        self.block = IDS_PER_CALLBACK if run.via_producer else run.ids_per_message
        self.received: dict[int, float] = {}  # block index -> received (epoch)
        self.offered_ids = 0
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.redis: RedisServer | None = None
        self.figures = ConsumerFigures(run)

    def take_ids(self) -> list[int]:
        first = self.next_id
        self.next_id += self.block
        self.received[(first - FIRST_ID) // self.block] = time.time()
        self.offered_ids += self.block
        return list(range(first, first + self.block))

    async def run(self) -> ConsumerFigures:
        admin = await asyncpg.connect(ADMIN_DSN)
        await admin.execute(f'CREATE DATABASE "{self.database}"')
        dsn = database_dsn(self.database)
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=3)
        await migrate(pool)
        connection = await aio_pika.connect(AMQP_URI)
        channel = await connection.channel(publisher_confirms=True)
        await declare_topology(channel, self.queue)
        own_emulator = contextlib.ExitStack()
        try:
            if self.run_config.broker == "pubsub":
                if self.emulator is None:
                    self.progress("starting the Pub/Sub emulator")
                    self.emulator = own_emulator.enter_context(running_emulator(launcher()))
                self.pubsub = PubSubLoad(self.emulator.host, self.queue)
                await self.pubsub.start()
            if self.run_config.store == "redis":
                # Never the machine's 6379 one: a server of the run's own, AOF everysec.
                self.redis = RedisServer(self.workdir / "redis").start()
            status_url = self.start_status_server()
            if self.run_config.saturate:
                self.progress("queueing the backlog")
                await self.publish_backlog(channel)
            producer_url = await self.start_producer() if self.run_config.via_producer else None
            self.start_consumer(status_url)
            async with aiohttp.ClientSession() as http:
                await self.measure(channel, pool, http, status_url, producer_url, dsn)
        finally:
            for process in reversed(self.processes.values()):
                if process.poll() is None:
                    process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
            if self.redis is not None:
                self.redis.remove()
            if self.pubsub is not None:
                await self.pubsub.remove()
            own_emulator.close()
            await connection.close()
            await delete_topology(self.queue)
            await pool.close()
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            await admin.close()
            self.keep_logs()
            shutil.rmtree(self.workdir, ignore_errors=True)
        return self.figures

    def keep_logs(self) -> None:
        """Copy the services' logs to ``BENCH_KEEP_LOGS``, if set, for a diagnosis."""
        keep = os.environ.get("BENCH_KEEP_LOGS")
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            for log in self.workdir.glob("*.log"):
                shutil.copy(log, Path(keep) / f"{self.queue}.{log.name}")

    def _spawn(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("wb")
        process = subprocess.Popen(
            command,
            cwd=self.workdir,
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.processes[name] = process
        return process

    def log_of(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")[-4000:]

    def start_status_server(self) -> str:
        run = self.run_config
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.consumer_status_server",
                "--port",
                "0",
                "--delay-min",
                str(run.delay_min),
                "--delay-max",
                str(run.delay_max),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
        )
        self.processes["status API"] = process
        assert process.stdout is not None
        return process.stdout.readline().decode().split()[-1]

    async def start_producer(self) -> str:
        from bench.producer_bench import free_port

        port = free_port()
        self._spawn(
            "producer",
            [sys.executable, "-m", "producer"],
            {
                "AMQP_URI": AMQP_URI,
                "QUEUE_NAME": self.queue,
                "PRODUCER_HOST": "127.0.0.1",
                "PRODUCER_PORT": str(port),
                "SPOOL_PATH": str(self.workdir / "spool.sqlite3"),
                "LOG_LEVEL": "warning",
                "LOG_FORMAT": "json",
                "SHUTDOWN_GRACE": "2s",
            },
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.processes["producer"].poll() is not None:
                    raise SystemExit(f"producer exited:\n{self.log_of('producer')}")
                try:
                    async with session.get(url + "/ready") as response:
                        if (await response.json())["broker"] == "connected":
                            return url
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise SystemExit(f"producer not ready after 30 s:\n{self.log_of('producer')}")

    def start_consumer(self, status_url: str) -> None:
        run = self.run_config
        store: dict[str, str] = (
            {"STORE": "redis", "REDIS_URL": self.redis.url}
            if self.redis is not None
            else postgres_env(self.database)
        )
        broker: dict[str, str] = (
            {
                "BROKER": "pubsub",
                "PUBSUB_PROJECT_ID": PUBSUB_PROJECT,
                "PUBSUB_EMULATOR_HOST": self.pubsub.settings.emulator_host or "",
            }
            if self.pubsub is not None
            else {}
        )
        env = {
            "AMQP_URI": AMQP_URI,
            "QUEUE_NAME": self.queue,
            **broker,
            **store,
            "TESTER_ENDPOINT": status_url,
            "MAX_CONSUMERS": str(run.max_consumers),
            "BATCH_MAX_ROWS": str(run.batch_rows),
            "BATCH_MAX_DELAY": run.batch_delay,
            "STATUS_CLIENT": run.status_client,
            "LOG_LEVEL": "warning",
            "LOG_FORMAT": "json",
            "SHUTDOWN_GRACE": "2s",  # in-flight work returns to the queue, deleted anyway
        }
        nice = ["nice", "-n", str(run.consumer_nice)] if run.consumer_nice else []
        profile = ["-m", "cProfile", "-o", run.cprofile_path] if run.cprofile_path else []
        self._spawn("consumer", [*nice, sys.executable, *profile, "-m", "consumer"], env)

    async def publish_backlog(self, channel: aio_pika.abc.AbstractChannel) -> None:
        run = self.run_config
        backlog = run.backlog or int(run.ceiling * 1.3 * (run.duration + run.warmup))
        for _ in range(0, backlog, run.ids_per_message):
            await self.publish_one(channel)

    async def publish_one(self, channel: aio_pika.abc.AbstractChannel) -> None:
        ids = self.take_ids()
        body = IdsMessage(f"bench-{ids[0]}", datetime.now(UTC), ids).encode()
        if self.pubsub is not None:
            await self.pubsub.publish(body, f"bench-{ids[0]}")
            return
        await channel.default_exchange.publish(
            aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=self.queue,
        )

    async def offer_direct(
        self, channel: aio_pika.abc.AbstractChannel, stop: asyncio.Event
    ) -> None:
        """Publish ``rate`` ids/s in messages of ``ids_per_message``, paced by the clock."""
        interval = self.run_config.ids_per_message / self.run_config.rate
        start = time.monotonic()
        sent = 0
        while not stop.is_set():
            delay = start + sent * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await self.publish_one(channel)
            sent += 1

    async def measure(
        self,
        channel: aio_pika.abc.AbstractChannel,
        pool: asyncpg.Pool,
        http: aiohttp.ClientSession,
        status_url: str,
        producer_url: str | None,
        dsn: str,
    ) -> None:
        run = self.run_config
        figures = self.figures
        consumer = self.processes["consumer"]

        async def served() -> tuple[int, int]:
            async with http.get(f"{status_url}/stats") as response:
                stats = await response.json()
            return stats["served"], stats["peak"]

        stop_offer = asyncio.Event()
        clock = CommitClock()
        clock_thread = clock.start(dsn) if run.track_commits else None
        load: CallbackLoad | None = None
        offer: asyncio.Task[None] | None = None
        if not run.saturate:
            if producer_url is not None:
                load = CallbackLoad(producer_url + "/callback", self.take_ids)
                offer = asyncio.create_task(load.run(run.rate, stop_offer))
            else:
                offer = asyncio.create_task(self.offer_direct(channel, stop_offer))

        self.progress("warm-up")
        await asyncio.sleep(run.warmup)
        served_0, _ = await served()
        pids: dict[str, int | None] = {name: p.pid for name, p in self.processes.items()}
        if self.redis is not None:
            pids["redis-server"] = self.redis.pid
        if self.pubsub is not None and self.emulator is not None and self.emulator.process:
            pids["pubsub emulator"] = self.emulator.process.pid
        pids["load generator"] = None
        meters = {name: CpuMeter(pid) for name, pid in pids.items()}
        for meter in meters.values():
            meter.start()
        t_0 = time.monotonic()
        window_start = time.time()
        if load is not None:
            load.measuring = True
        last_served, last_t = served_0, t_0
        figures.cpu_timeline.append((0.0, cpu_seconds(consumer.pid), served_0))
        while time.monotonic() - t_0 < run.duration:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            depth = 0  # with Pub/Sub: not measured (the emulator gives no backlog)
            if self.pubsub is None:
                declared = await channel.declare_queue(self.queue, passive=True)
                depth = declared.declaration_result.message_count or 0
            figures.max_backlog = max(figures.max_backlog, depth)
            count, _ = await served()
            figures.cpu_timeline.append((now - t_0, cpu_seconds(consumer.pid), count))
            figures.timeline.append((now - t_0, (count - last_served) / (now - last_t), depth))
            figures.rss_samples.append((now - t_0, vm_rss_mb(consumer.pid)))
            last_served, last_t = count, now
            if producer_url is not None:
                async with http.get(producer_url + "/ready") as response:
                    figures.producer_states.add(str((await response.json())["broker"]))
            if run.broker_status is not None and len(figures.timeline) % 15 == 1:
                figures.broker_samples.append(
                    await asyncio.to_thread(run.broker_status)  # rabbitmqctl: ~0.5 s CPU
                )
            if consumer.poll() is not None:
                raise SystemExit(f"consumer exited:\n{self.log_of('consumer')}")
            self.progress(f"{now - t_0:.0f}/{run.duration:.0f} s, {count - served_0:,} ids")
        served_1, figures.peak_in_flight = await served()
        t_1 = time.monotonic()
        window_end = time.time()
        if load is not None:
            load.measuring = False
        figures.window = t_1 - t_0
        figures.ids_done = served_1 - served_0
        figures.rate = figures.ids_done / figures.window
        for name, meter in meters.items():
            seconds = meter.stop()
            pid = pids[name] or os.getpid()
            figures.costs[name] = ServiceCost(
                seconds, 1000 * seconds / max(figures.ids_done, 1), vm_hwm_mb(pid)
            )
        if run.profile_seconds and run.profile_path:
            self.progress(f"py-spy on the consumer for {run.profile_seconds:.0f} s")
            meter = CpuMeter(consumer.pid)
            meter.start()
            figures.profile_path = await self.py_spy(consumer.pid, run)
            figures.profile_cpu_seconds = meter.stop()

        if run.drain and offer is not None:
            stop_offer.set()
            await offer
            stop_drain = time.monotonic()
            served_now, _ = await served()
            # Ids of a failed callback may never have been enqueued: do not wait for them.
            expected = self.offered_ids - (load.failed_ids if load is not None else 0)
            figures.drain_backlog_ids = max(expected - served_now, 0)
            self.progress(f"draining {figures.drain_backlog_ids:,} ids")
            while time.monotonic() - stop_drain < run.drain_timeout:
                served_now, _ = await served()
                if served_now >= expected:
                    figures.drain_seconds = time.monotonic() - stop_drain
                    break
                figures.rss_samples.append((time.monotonic() - t_0, vm_rss_mb(consumer.pid)))
                declared = await channel.declare_queue(self.queue, passive=True)
                depth = declared.declaration_result.message_count or 0
                figures.timeline.append((time.monotonic() - t_0, float("nan"), depth))
                self.progress(f"draining: {expected - served_now:,} ids left")
                await asyncio.sleep(0.5)
        read_back = not run.saturate and run.read_back and self.redis is None
        if read_back:  # let the last rows of the window land
            await self.wait_window_stored(pool, window_end)
        stop_offer.set()
        if offer is not None:
            await offer
        if clock_thread is not None:
            clock_thread[1].set()
            await asyncio.to_thread(clock_thread[0].join)
        if consumer.poll() is None:
            figures.costs["consumer"].peak_rss_mb = vm_hwm_mb(consumer.pid)
        if load is not None:
            figures.callbacks_sent = load.sent
            figures.callbacks_failed = load.failed
            figures.callbacks_spooled = load.spooled
            figures.callback_latency = load.latencies
        if read_back:
            await self.read_rows(pool, clock, window_start, window_end)

    async def py_spy(self, pid: int, run: ConsumerRun) -> Path | None:
        assert run.profile_path is not None
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        process = await asyncio.create_subprocess_exec(
            py_spy,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(run.profile_seconds)),
            "--rate",
            "200",
            "--native",  # uvloop and the C parsers: most of the time is there
            "--format",
            "raw",
            "--output",
            str(run.profile_path),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await process.communicate()
        if process.returncode != 0 or not run.profile_path.exists():
            self.progress(f"py-spy failed: {stderr.decode(errors='replace')[-300:]}")
            return None
        return run.profile_path

    async def wait_window_stored(self, pool: asyncpg.Pool, window_end: float) -> None:
        """Wait (at most the longest delay plus 10 s) until the online ids received in the window
        are stored: the pipeline overhead needs every one of them."""
        last_block = max((b for b, t in self.received.items() if t <= window_end), default=None)
        if last_block is None:
            return
        last_id = FIRST_ID + last_block * self.block + self.block - 2  # an even id: online
        deadline = time.monotonic() + self.run_config.delay_max + 10
        while time.monotonic() < deadline:
            if await pool.fetchval("SELECT 1 FROM object WHERE id >= $1 LIMIT 1", last_id):
                await asyncio.sleep(self.run_config.delay_max)  # its block's neighbours
                return
            await asyncio.sleep(0.2)

    async def read_rows(
        self, pool: asyncpg.Pool, clock: CommitClock, window_start: float, window_end: float
    ) -> None:
        figures = self.figures
        run = self.run_config
        rows = await pool.fetch("SELECT id, last_seen, xmin::text::bigint AS xmin FROM object")
        commits = clock.commit_times({row["xmin"] for row in rows}) if run.track_commits else {}
        for row in rows:
            received = self.received.get((row["id"] - FIRST_ID) // self.block)
            if received is None or not window_start <= received <= window_end:
                continue
            figures.freshness.append(row["last_seen"].timestamp() - received)
            bracket = commits.get(row["xmin"])
            if bracket is not None:
                delay = status_delay(row["id"], run.delay_min, run.delay_max)
                figures.overhead.append(bracket[1] - received - delay)
                figures.overhead_at.append(received - window_start)
                answered = row["last_seen"].timestamp()
                figures.to_answer.append(answered - received - delay)
                figures.to_commit.append(bracket[1] - answered)
                figures.overhead_lower.append(bracket[0] - received - delay)
                figures.commit_uncertainty.append(bracket[1] - bracket[0])


def print_figures(figures: ConsumerFigures) -> None:
    run = figures.run
    mode = "saturate" if run.saturate else "load"
    print(
        f"mode={mode} max_consumers={run.max_consumers} "
        f"ids/message={run.ids_per_message} delay={run.delay_min}-{run.delay_max}s "
        f"batch={run.batch_rows} rows/{run.batch_delay} window={figures.window:.0f}s "
        f"(after {run.warmup:.0f}s warm-up)"
    )
    if run.saturate:
        print(
            f"  throughput        {figures.rate:8.0f} ids/s   (Little's law ceiling "
            f"{run.ceiling:.0f}; {100 * figures.rate / run.ceiling:.0f}% of it)"
        )
    else:
        print(f"  offered           {run.rate:8.0f} ids/s   served {figures.rate:.0f} ids/s")
        if run.broker == "pubsub":
            print("  broker            Pub/Sub emulator (not the service; backlog not read)")
        else:
            print(f"  max backlog       {figures.max_backlog:8d} messages in the work queue")
    for name, cost in figures.costs.items():
        print(
            f"  {name:<16}  {cost.cpu_ms_per_id:8.3f} ms CPU/id ({cost.cpu_seconds:.1f} s), "
            f"peak RSS {cost.peak_rss_mb:.0f} MB"
        )
    parts = Spread.of(figures.cpu_ms_per_id_by_part(PARTS))
    print(f"  consumer CPU/id in {PARTS} parts of the window: {parts.label(3, ' ms')}")
    print(f"  peak in flight    {figures.peak_in_flight:8d}          (bound {run.max_consumers})")
    print(
        f"  freshness answered p50 {percentile(figures.freshness, 0.5):.2f}s "
        f"p99 {percentile(figures.freshness, 0.99):.2f}s (n={len(figures.freshness)})"
    )
    if figures.overhead:
        print(
            f"  pipeline overhead p50 {1000 * percentile(figures.overhead, 0.5):.0f} ms "
            f"p99 {1000 * percentile(figures.overhead, 0.99):.0f} ms "
            f"max {1000 * max(figures.overhead):.0f} ms (n={len(figures.overhead)}; lower bound "
            f"p99 {1000 * percentile(figures.overhead_lower, 0.99):.0f} ms; "
            f"commit time known to {1000 * percentile(figures.commit_uncertainty, 0.5):.0f} ms "
            f"p50, {1000 * percentile(figures.commit_uncertainty, 0.99):.0f} ms p99)"
        )
    if figures.overhead:
        by_part = figures.overhead_by_part(PARTS)
        q = common_quantile(by_part)
        tails = Spread.of(1000 * at(part, q).value for part in by_part)
        print(f"    by part of the window: {at(figures.overhead, q).name} {tails.label(0, ' ms')}")
    if figures.to_answer:
        for name, part in (("to answer", figures.to_answer), ("to commit", figures.to_commit)):
            print(
                f"    of which {name}: p50 {1000 * percentile(part, 0.5):.0f} ms "
                f"p99 {1000 * percentile(part, 0.99):.0f} ms"
            )
    print(
        "  timeline (s: ids/s, backlog msgs): "
        + ", ".join(f"{t:.0f}: {r:.0f}/{d}" for t, r, d in figures.timeline[::5])
    )
    if run.via_producer:
        print(
            f"  callbacks         {figures.callbacks_sent} sent, {figures.callbacks_failed} missed"
            f" (non-2xx or > 1 s), p99 {1000 * percentile(figures.callback_latency, 0.99):.1f} ms"
        )
    if run.drain:
        print(
            f"  drain             {figures.drain_backlog_ids:,} ids in {figures.drain_seconds:.1f}"
            f" s ({figures.drain_rate:.0f} ids/s)"
        )
    print(f"  machine after: {machine()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("mode", choices=["saturate", "load"])
    parser.add_argument("--max-consumers", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=3000.0, help="ids/s offered (load mode)")
    parser.add_argument("--backlog", type=int, default=0, help="ids queued first (saturate)")
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--ids-per-message", type=int, default=100)
    parser.add_argument("--delay-min", type=float, default=0.3)
    parser.add_argument("--delay-max", type=float, default=4.3)
    parser.add_argument("--batch-rows", type=int, default=500)
    parser.add_argument("--batch-delay", default="50ms")
    parser.add_argument("--status-client", choices=["httptools", "standard"], default="httptools")
    parser.add_argument("--via-producer", action="store_true", help="callbacks to a producer")
    parser.add_argument("--nice", type=int, default=0, help="run the consumer under nice -n N")
    parser.add_argument("--drain", action="store_true", help="time the backlog's drain after")
    parser.add_argument("--profile", help="run the consumer under cProfile, stats to this file")
    parser.add_argument(
        "--store", choices=["postgres", "redis"], default="postgres", help="the consumer's STORE"
    )
    parser.add_argument(
        "--broker",
        choices=["rabbitmq", "pubsub"],
        default="rabbitmq",
        help="the consumer's BROKER (pubsub: Google's emulator of the run's own, not the service)",
    )
    args = parser.parse_args()
    run = ConsumerRun(
        max_consumers=args.max_consumers,
        rate=0.0 if args.mode == "saturate" else args.rate,
        backlog=args.backlog,
        duration=args.duration,
        warmup=args.warmup,
        ids_per_message=args.ids_per_message,
        delay_min=args.delay_min,
        delay_max=args.delay_max,
        batch_rows=args.batch_rows,
        batch_delay=args.batch_delay,
        status_client=args.status_client,
        via_producer=args.via_producer,
        consumer_nice=args.nice,
        track_commits=args.mode == "load" and args.store == "postgres",
        store=args.store,
        broker=args.broker,
        drain=args.drain,
        cprofile_path=args.profile,
    )
    print(f"machine: {machine()}")
    print_figures(asyncio.run(Bench(run).run()))


if __name__ == "__main__":
    main()
