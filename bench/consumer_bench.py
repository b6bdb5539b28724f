"""Consumer benchmark: throughput at a given MAX_CONSUMERS, and keeping up with an offered rate.

Runs everything as real processes on this machine: RabbitMQ and PostgreSQL (the local ones), a
status API with the tester's delay distribution (``bench.consumer_status_server``), one
``python -m consumer``, and this script as the producer (publishing ``IdsMessage`` JSON, 100 ids
per message by default, with ids that never repeat, so single-flight cannot flatter the figures).

    # saturation: a backlog bigger than the run, how many ids/s does one process do?
    python -m bench.consumer_bench saturate --max-consumers 2000 --duration 60
    # load: offer 3,000 ids/s for 60 s; CPU per id, peak RSS, freshness, backlog
    python -m bench.consumer_bench load --max-consumers 8000 --rate 3000 --duration 60

Definitions (printed with the figures):
* ids/s: status lookups answered per second (the status API's own count), over the measured
  window, which starts after a warm-up.
* CPU per id: the consumer process's user+system CPU time over the window (from
  /proc/<pid>/stat), divided by the ids it finished in that window.
* peak RSS: VmHWM of the consumer process (/proc/<pid>/status) at the end of the run.
* freshness, answered: ``last_seen - received_at`` per stored row: from the moment the producer
  (here: this script) took the callback to the moment the status API answered online.
* freshness, visible: for a sample of ids (every 10th message), the time this script first saw
  the row in PostgreSQL (polled every 100 ms) minus ``received_at``: includes batching and the
  commit, so it is what a reader of the table experiences.
* Both freshness figures are given for the messages received in the measured window (the
  steady state) and for the whole run, which includes the start-up: the consumer connects
  while the offer already runs, and the backlog of those first seconds drains only at the
  spare capacity of MAX_CONSUMERS.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import aiohttp
import asyncpg

from common.amqp import RETRY_TIERS_MS, Topology, declare_topology
from common.db import migrate
from common.messages import IdsMessage

AMQP_URI = os.environ.get("BENCH_AMQP_URI", "amqp://guest:guest@127.0.0.1:5672/")
ADMIN_DSN = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
FIRST_ID = 1_000_000_000


def machine() -> str:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    load = Path("/proc/loadavg").read_text().split()[:3]
    return (
        f"nproc={os.cpu_count()} cpu={model!r} python={platform.python_version()} "
        f"load(1/5/15m)={'/'.join(load)}"
    )


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.queue = f"bench_consumer_{uuid.uuid4().hex[:8]}"
        self.database = f"bench_consumer_{uuid.uuid4().hex[:8]}"
        self.next_id = FIRST_ID
        self.published_at: dict[int, float] = {}  # first id of a message -> received_at (epoch)
        self.sampled: dict[int, float] = {}  # sampled id -> received_at (epoch)
        self.visible_lag: list[tuple[float, float]] = []  # (received_at, lag)
        self.window_start = float("inf")  # epoch: messages received from then on are measured
        self.messages = 0
        self.processes: list[subprocess.Popen[bytes]] = []
        self.figures: dict[str, float] = {}  # the printed figures, for bench.capacity

    async def run(self) -> None:
        args = self.args
        print(f"machine: {machine()}")
        admin = await asyncpg.connect(ADMIN_DSN)
        await admin.execute(f'CREATE DATABASE "{self.database}"')
        dsn = ADMIN_DSN.rsplit("/", 1)[0] + f"/{self.database}"
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        await migrate(pool)
        connection = await aio_pika.connect(AMQP_URI)
        channel = await connection.channel(publisher_confirms=True)
        await declare_topology(channel, self.queue)
        status_url = self.start_status_server()
        try:
            if args.mode == "saturate":
                await self.publish_ids(channel, args.backlog)
            consumer = self.start_consumer(status_url)
            async with aiohttp.ClientSession() as http:
                await self.measure(channel, pool, http, status_url, consumer)
        finally:
            for process in reversed(self.processes):
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
            topology = Topology(self.queue)
            for name in [topology.work, topology.dead, *map(topology.retry, RETRY_TIERS_MS)]:
                await channel.queue_delete(name)
            await connection.close()
            await pool.close()
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            await admin.close()

    def start_status_server(self) -> str:
        args = self.args
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.consumer_status_server",
                "--port",
                "0",
                "--delay-min",
                str(args.delay_min),
                "--delay-max",
                str(args.delay_max),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
        )
        self.processes.append(process)
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        return line.split()[-1]

    def start_consumer(self, status_url: str) -> subprocess.Popen[bytes]:
        args = self.args
        env = {
            **os.environ,
            "AMQP_URI": AMQP_URI,
            "QUEUE_NAME": self.queue,
            "POSTGRES_HOST": "127.0.0.1",
            "POSTGRES_DB": self.database,
            "POSTGRES_USER": "postgres",
            "TESTER_ENDPOINT": status_url,
            "MAX_CONSUMERS": str(args.max_consumers),
            "BATCH_MAX_ROWS": str(args.batch_rows),
            "BATCH_MAX_DELAY": args.batch_delay,
            "LOG_LEVEL": "warning",
            "LOG_FORMAT": "json",
            "PYTHONPATH": str(ROOT),
        }
        log = open(f"/tmp/{self.queue}.consumer.log", "wb")  # noqa: SIM115 - lives with the child
        profile = ["-m", "cProfile", "-o", args.profile] if args.profile else []
        process = subprocess.Popen(
            [sys.executable, *profile, "-m", "consumer"],
            cwd="/tmp",
            env=env,
            stdout=log,
            stderr=log,
        )
        self.processes.append(process)
        return process

    async def publish_ids(self, channel: aio_pika.abc.AbstractChannel, count: int) -> None:
        per = self.args.ids_per_message
        for _ in range(0, count, per):
            await self.publish_one(channel, per)

    async def publish_one(self, channel: aio_pika.abc.AbstractChannel, per: int) -> None:
        first = self.next_id
        ids = list(range(first, first + per))
        self.next_id += per
        now = datetime.now(UTC)
        self.published_at[first] = now.timestamp()
        if self.messages % 10 == 0:
            for object_id in ids[::2]:  # the even ones: online
                self.sampled[object_id if object_id % 2 == 0 else object_id + 1] = now.timestamp()
        self.messages += 1
        body = IdsMessage(f"bench-{first}", now, ids).encode()
        await channel.default_exchange.publish(
            aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=self.queue,
        )

    async def offer(self, channel: aio_pika.abc.AbstractChannel, stop: asyncio.Event) -> None:
        """Publish ``--rate`` ids/s in messages of ``--ids-per-message``, paced by the clock."""
        per = self.args.ids_per_message
        interval = per / self.args.rate
        start = time.monotonic()
        sent = 0
        while not stop.is_set():
            due = start + sent * interval
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await self.publish_one(channel, per)
            sent += 1

    async def watch_visibility(self, pool: asyncpg.Pool, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(0.1)
            pending = list(self.sampled)
            if not pending:
                continue
            rows = await pool.fetch("SELECT id FROM object WHERE id = ANY($1::bigint[])", pending)
            now = time.time()
            for row in rows:
                received = self.sampled.pop(row["id"])
                self.visible_lag.append((received, now - received))

    async def measure(
        self,
        channel: aio_pika.abc.AbstractChannel,
        pool: asyncpg.Pool,
        http: aiohttp.ClientSession,
        status_url: str,
        consumer: subprocess.Popen[bytes],
    ) -> None:
        args = self.args

        async def served() -> tuple[int, int]:
            async with http.get(f"{status_url}/stats") as response:
                stats = await response.json()
            return stats["served"], stats["peak"]

        stop = asyncio.Event()
        background = [asyncio.create_task(self.watch_visibility(pool, stop))]
        if args.mode == "load":
            background.append(asyncio.create_task(self.offer(channel, stop)))
        max_backlog = 0
        await asyncio.sleep(args.warmup)
        served_0, _ = await served()
        status_pid = self.processes[0].pid
        cpu_0, t_0 = cpu_seconds(consumer.pid), time.monotonic()
        self.window_start = time.time()
        status_cpu_0 = cpu_seconds(status_pid)
        while time.monotonic() - t_0 < args.duration:
            await asyncio.sleep(1.0)
            declared = await channel.declare_queue(self.queue, passive=True)
            max_backlog = max(max_backlog, declared.declaration_result.message_count or 0)
            if consumer.poll() is not None:
                raise SystemExit(f"consumer exited with {consumer.returncode}")
        served_1, peak = await served()
        cpu_1, t_1 = cpu_seconds(consumer.pid), time.monotonic()
        status_cpu = cpu_seconds(status_pid) - status_cpu_0
        hwm = vm_hwm_mb(consumer.pid)
        stop.set()
        await asyncio.gather(*background)
        ids_done = served_1 - served_0
        rate = ids_done / (t_1 - t_0)
        cpu_per_id_ms = 1000 * (cpu_1 - cpu_0) / max(ids_done, 1)
        answered_lag = await self.answered_freshness(pool)
        self.figures = {
            "ids_per_s": rate,
            "cpu_ms_per_id": cpu_per_id_ms,
            "peak_rss_mb": hwm,
            "peak_in_flight": float(peak),
            "max_backlog_messages": float(max_backlog),
            "window_s": t_1 - t_0,
        }
        mean_delay = (args.delay_min + args.delay_max) / 2
        print(
            f"mode={args.mode} max_consumers={args.max_consumers} "
            f"ids/message={args.ids_per_message} delay={args.delay_min}-{args.delay_max}s "
            f"batch={args.batch_rows} rows/{args.batch_delay} window={t_1 - t_0:.0f}s "
            f"(after {args.warmup:.0f}s warm-up)"
        )
        if args.mode == "saturate":
            ceiling = args.max_consumers / mean_delay
            print(
                f"  throughput        {rate:8.0f} ids/s   (Little's law ceiling "
                f"{ceiling:.0f}; {100 * rate / ceiling:.0f}% of it; target >= 90%)"
            )
        else:
            print(f"  offered           {args.rate:8.0f} ids/s   served {rate:.0f} ids/s")
            print(f"  max backlog       {max_backlog:8d} messages in the work queue")
        print(f"  consumer CPU      {cpu_per_id_ms:8.3f} ms/id  ({cpu_1 - cpu_0:.1f} s CPU)")
        print(
            f"  status API CPU    {1000 * status_cpu / max(ids_done, 1):8.3f} ms/id  "
            f"({status_cpu:.1f} s CPU; the stand-in tester, for context)"
        )
        print(f"  consumer peak RSS {hwm:8.1f} MB (VmHWM)")
        print(f"  peak in flight    {peak:8d}          (bound {args.max_consumers})")
        for what, lags in (("answered", answered_lag), ("visible ", self.visible_lag)):
            window = [lag for received, lag in lags if received >= self.window_start]
            whole = [lag for _, lag in lags]
            print(
                f"  freshness {what} p50 {percentile(window, 0.5):.2f}s "
                f"p99 {percentile(window, 0.99):.2f}s (n={len(window)}, received in the window); "
                f"whole run with start-up: p50 {percentile(whole, 0.5):.2f}s "
                f"p99 {percentile(whole, 0.99):.2f}s"
            )
        print(f"  machine after: {machine()}")

    async def answered_freshness(self, pool: asyncpg.Pool) -> list[tuple[float, float]]:
        """(received_at, last_seen - received_at) of every stored row."""
        per = self.args.ids_per_message
        rows = await pool.fetch("SELECT id, last_seen FROM object")
        lags = []
        for row in rows:
            first = FIRST_ID + (row["id"] - FIRST_ID) // per * per
            received = self.published_at.get(first)
            if received is not None:
                lags.append((received, row["last_seen"].timestamp() - received))
        return lags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    parser.add_argument("--profile", help="run the consumer under cProfile, stats to this file")
    args = parser.parse_args()
    if args.mode == "saturate" and not args.backlog:
        ceiling = args.max_consumers / ((args.delay_min + args.delay_max) / 2)
        args.backlog = int(ceiling * 1.3 * (args.duration + args.warmup))
    asyncio.run(Bench(args).run())


if __name__ == "__main__":
    main()
