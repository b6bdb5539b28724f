"""Producer benchmark: 200-id callbacks against a bare FastAPI endpoint, the producer, and the
producer with ``IDS_PER_MESSAGE=1``, side by side, in one run.

    python -m bench.producer_bench                 # wrk for 10 s per target, then 500/s for 10 s
    python -m bench.producer_bench --duration 20 --connections 64 --rate 500
    python -m bench.producer_bench --publish-modes pipeline,standard --no-per-id
    python -m bench.producer_bench --baseline /tmp/base --no-per-id --repeat 3   # before/after

``--publish-modes`` measures the producer once per ``PUBLISH_MODE``; ``--baseline DIR`` adds the
producer of another checkout (e.g. ``git worktree add --detach /tmp/base main``) as a column of
the same run, so a before/after comparison shares the machine's load; ``--repeat N`` (default 3)
measures every column N times, alternating, bare FastAPI included, and prints each column's ratio
to the bare endpoint of the same round as a median and range over the rounds (bench.verdicts).

Everything runs on this machine: the local RabbitMQ, each target as a real process
(``bench.producer_bare_app``; ``python -m producer`` with a queue of its own, deleted afterwards,
and a spool in a temporary directory), and the load generators. ``--pubsub`` adds the producer
with ``BROKER=pubsub`` against Google's emulator, started for the run: the emulator answers a
publish in about a millisecond, the service in tens, so that column shows the producer's own cost
with Pub/Sub's client, not what a deployment on the service will see (docs/pubsub.md).

Two measurements per target:
* **saturation** with wrk (C, one thread, ``--connections`` keep-alive connections, a Lua script
  cycling through 64 bodies of 200 distinct random ids): callbacks/s and wrk's p50/p99. It needs
  ``wrk`` on the PATH (Debian: ``apt-get install -y wrk``; ``--install-wrk`` runs that).
* **latency at a fixed rate** with an open-loop generator (asyncio + aiohttp, in this process):
  request *i* is due at ``start + i / rate`` whatever happened to the earlier ones, and its latency
  counts from that due time, so a stall shows up in the percentiles instead of slowing the
  generator down (no coordinated omission). wrk cannot hold a constant rate (that is wrk2).

For the producer columns "durable" is checked, not assumed: after each run the script compares
the messages in the queue (the work subscription) plus the spool depth with what the accepted
callbacks should have made.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import aiohttp
import orjson

from bench.measure import AMQP_URI, ROOT, CpuMeter, machine, vm_hwm_mb
from bench.verdicts import Spread, at, common_quantile
from common.amqp import Topology
from common.broker.pubsub_topology import PubSubSettings, PubSubTopology
from producer.confirms import PublishMode
from producer.settings import ProducerSettings

IDS_PER_CALLBACK = 200
BARE = "bare FastAPI"
PER_ID = "producer (IDS_PER_MESSAGE=1)"
PUBSUB_PROJECT = "lastseen-bench"
BODIES = 64


@dataclass
class Target:
    name: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    queue: str | None = None
    ids_per_message: int | None = None
    fixed_rate: float | None = None  # None: --rate
    column: str = ""  # the name without its round: what the rounds are repeats of
    round: int = 1
    received: Callable[[str], Awaitable[int]] | None = None
    """Count the messages the broker holds for ``queue``, then delete its topology (default:
    RabbitMQ's :func:`queue_depth_and_delete`)."""


@dataclass
class Figures:
    rate: float = 0.0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    errors: str = ""
    fixed_rate: float = 0.0
    fixed_p50_ms: float = float("nan")
    fixed_p99_ms: float = float("nan")
    fixed_max_ms: float = float("nan")
    fixed_failed: int = 0
    spooled_callbacks: int = 0
    durable_check: str = "n/a"
    generator: str = "wrk"
    cpu_ms_per_callback: float = float("nan")  # the target's CPU during the fixed-rate run
    saturated_cpu_ms_per_callback: float = float("nan")  # ... during the saturation run
    peak_rss_mb: float = float("nan")
    latencies: list[float] = field(default_factory=list)  # fixed-rate run, s


@dataclass
class AcceptanceRun:
    duration: float = 10.0
    warmup: float = 2.0
    connections: int = 32
    rate: float = 500.0
    fixed_duration: float = 10.0
    ids_per_message: int | None = None
    wrk: str | None = None  # None: the closed-loop aiohttp generator in this process
    publish_modes: tuple[PublishMode, ...] = (PublishMode.PIPELINE,)
    baseline: Path | None = None  # another checkout, measured as one more column
    per_id: bool = True  # the IDS_PER_MESSAGE=1 column
    repeat: int = 1  # rounds of bare FastAPI, the baseline and the mode columns, alternating
    pubsub: bool = False  # a column with BROKER=pubsub against Google's emulator, each round


def find_wrk(install: bool) -> str:
    found = shutil.which("wrk")
    if found is None and install:
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=False)
        found = shutil.which("wrk")
    if found is None:
        sys.exit(
            "wrk not found: install it with `apt-get install -y wrk` (Debian/Ubuntu) or run "
            "this script with --install-wrk"
        )
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def make_bodies() -> list[bytes]:
    rng = random.Random(7)
    return [
        orjson.dumps({"object_ids": rng.sample(range(1, 2**62), IDS_PER_CALLBACK)})
        for _ in range(BODIES)
    ]


def wrk_script(bodies: list[bytes], directory: Path) -> Path:
    quoted = ",\n".join("[[" + body.decode() + "]]" for body in bodies)
    script = directory / "producer_bench.lua"
    script.write_text(
        f"""
local bodies = {{
{quoted}
}}
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  n = n % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[n])
end
"""
    )
    return script


@dataclass
class WrkResult:
    rate: float
    p50_ms: float
    p99_ms: float
    errors: str
    ok: int  # 2xx answers


def run_wrk(wrk: str, script: Path, url: str, connections: int, duration: float) -> WrkResult:
    seconds = max(1, round(duration))  # wrk takes whole seconds only
    result = subprocess.run(
        [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    )
    out = result.stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _wrk_ms(re.search(r"\n\s+50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _wrk_ms(re.search(r"\n\s+99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    errors = "; ".join(
        line.strip() for line in out.splitlines() if "Non-2xx" in line or "Socket errors" in line
    )
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return WrkResult(rate, p50, p99, errors, total - (int(non_2xx.group(1)) if non_2xx else 0))


async def closed_loop(
    url: str, bodies: list[bytes], connections: int, duration: float
) -> WrkResult:
    """Where wrk is missing: ``connections`` workers posting back to back (this process's CPU
    then limits the rate: the figures are lower bounds)."""
    latencies: list[float] = []
    errors = 0
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        end = time.perf_counter() + duration

        async def worker(offset: int) -> None:
            nonlocal errors
            n = offset
            while time.perf_counter() < end:
                started = time.perf_counter()
                async with session.post(url, data=bodies[n % len(bodies)], headers=headers) as r:
                    await r.read()
                    if r.status >= 300:
                        errors += 1
                    else:
                        latencies.append(time.perf_counter() - started)
                n += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(connections)))
        elapsed = time.perf_counter() - started
    return WrkResult(
        (len(latencies) + errors) / elapsed,
        percentile_ms(latencies, 0.5),
        percentile_ms(latencies, 0.99),
        f"Non-2xx or 3xx responses: {errors}" if errors else "",
        len(latencies),
    )


def _wrk_ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


async def fixed_rate(
    url: str, bodies: list[bytes], rate: float, duration: float
) -> tuple[float, list[float], int]:
    """Open loop: request i is due at start + i/rate; latency counts from that due time."""
    connector = aiohttp.TCPConnector(limit=256)
    timeout = aiohttp.ClientTimeout(total=5)
    latencies: list[float] = []
    failed = 0
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(due: float, body: bytes) -> None:
            nonlocal failed
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status >= 300:
                        failed += 1
                        return
            except (aiohttp.ClientError, TimeoutError):
                failed += 1
                return
            latencies.append(time.perf_counter() - due)

        total = int(rate * duration)
        start = time.perf_counter() + 0.05
        tasks = []
        for i in range(total):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(due, bodies[i % len(bodies)])))
        await asyncio.gather(*tasks)
        achieved = total / (time.perf_counter() - start)
    return achieved, latencies, failed


def percentile_ms(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


class Running:
    def __init__(self, target: Target, port: int, workdir: Path) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "info",
            "SHUTDOWN_GRACE": "2s",  # nothing to finish gracefully in a benchmark
            **target.env,
        }
        self.log_path = workdir / f"{target.name.replace(' ', '_')}.log"
        self.process = subprocess.Popen(
            target.command,
            cwd=workdir,
            env=env,
            stdout=self.log_path.open("wb"),
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://127.0.0.1:{port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


async def wait_serving(running: Running, producer: bool) -> None:
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if running.process.poll() is not None:
                sys.exit(f"target exited early:\n{running.log()}")
            try:
                if producer:
                    async with session.get(running.url + "/ready") as response:
                        if (await response.json())["broker"] == "connected":
                            return
                else:
                    body = orjson.dumps({"object_ids": [1]})
                    headers = {"Content-Type": "application/json"}
                    async with session.post(
                        running.url + "/callback", data=body, headers=headers
                    ) as response:
                        if response.status == 202:
                            return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    sys.exit(f"target not serving after 30 s:\n{running.log()}")


async def spool_depth(running: Running) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(running.url + "/ready") as response,
    ):
        return int((await response.json())["spool_depth"])


async def queue_depth_and_delete(queue: str) -> int:
    connection = await aio_pika.connect(AMQP_URI)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        depth = int(declared.declaration_result.message_count or 0)
        topology = Topology(queue)
        for name in (topology.work, topology.dead):
            await channel.queue_delete(name)
        return depth
    finally:
        await connection.close()


def pubsub_received(emulator_host: str) -> Callable[[str], Awaitable[int]]:
    """:attr:`Target.received` for Pub/Sub: pull the work subscription dry without acking (a
    pulled message is not handed out again within its ack deadline), then delete the topology."""
    from common.broker.pubsub_clients import publisher_client, subscriber_client

    settings = PubSubSettings(PUBSUB_PROJECT, emulator_host)

    def count_and_delete(queue: str) -> int:
        topology = PubSubTopology.for_queue(PUBSUB_PROJECT, queue)
        subscriber, publisher = subscriber_client(settings), publisher_client(settings)
        count = 0
        try:
            while True:
                with warnings.catch_warnings():
                    # deprecated for the service; the emulator answers at once with what it holds
                    warnings.simplefilter("ignore", DeprecationWarning)
                    response = subscriber.pull(
                        request={
                            "subscription": topology.work_subscription,
                            "max_messages": 1000,
                            "return_immediately": True,
                        },
                        timeout=30,
                    )
                if not response.received_messages:
                    break
                count += len(response.received_messages)
            for subscription in (topology.work_subscription, topology.dead_subscription):
                subscriber.delete_subscription(subscription=subscription)
            for topic in (topology.topic, topology.dead_topic):
                publisher.delete_topic(topic=topic)
        finally:
            subscriber.close()
            publisher.transport.close()
        return count

    async def received(queue: str) -> int:
        return await asyncio.to_thread(count_and_delete, queue)

    return received


def start(target: Target, workdir: Path) -> Running:
    port = free_port()
    target.command = [arg.replace("{port}", str(port)) for arg in target.command]
    target.env = {key: value.replace("{port}", str(port)) for key, value in target.env.items()}
    return Running(target, port, workdir)


async def measure(
    target: Target,
    running: Running,
    script: Path,
    bodies: list[bytes],
    args: AcceptanceRun,
) -> Figures:
    """Measure a started target, then stop it."""
    producer = target.queue is not None
    figures = Figures()
    spooled_now = 0
    try:
        url = running.url + "/callback"

        async def saturate(duration: float) -> WrkResult:
            if args.wrk is None:
                return await closed_loop(url, bodies, args.connections, duration)
            return await asyncio.to_thread(
                run_wrk, args.wrk, script, url, args.connections, duration
            )

        figures.generator = "wrk" if args.wrk else "aiohttp closed loop"
        warmup = await saturate(args.warmup) if args.warmup else WrkResult(0, 0, 0, "", 0)
        saturated = CpuMeter(running.process.pid)
        saturated.start()
        main_run = await saturate(args.duration)
        figures.saturated_cpu_ms_per_callback = 1000 * saturated.stop() / max(main_run.ok, 1)
        figures.rate, figures.p50_ms, figures.p99_ms = (
            main_run.rate,
            main_run.p50_ms,
            main_run.p99_ms,
        )
        figures.errors = main_run.errors
        meter = CpuMeter(running.process.pid)
        meter.start()
        achieved, latencies, figures.fixed_failed = await fixed_rate(
            url, bodies, target.fixed_rate or args.rate, args.fixed_duration
        )
        figures.cpu_ms_per_callback = 1000 * meter.stop() / max(len(latencies), 1)
        figures.peak_rss_mb = vm_hwm_mb(running.process.pid)
        figures.latencies = latencies
        accepted = warmup.ok + main_run.ok + len(latencies)
        figures.fixed_rate = achieved
        figures.fixed_p50_ms = percentile_ms(latencies, 0.50)
        figures.fixed_p99_ms = percentile_ms(latencies, 0.99)
        figures.fixed_max_ms = percentile_ms(latencies, 1.0)
        if producer:
            # Let the relay finish before counting; what is still spooled is durable too.
            for _ in range(150):
                spooled_now = await spool_depth(running)
                if not spooled_now:
                    break
                await asyncio.sleep(0.2)
    finally:
        running.stop()
    if producer:
        assert target.queue is not None and target.ids_per_message is not None
        figures.spooled_callbacks = running.log().count('"callback_spooled"')
        queued = await (target.received or queue_depth_and_delete)(target.queue)
        expected = accepted * -(-IDS_PER_CALLBACK // target.ids_per_message)
        # More than expected is possible (a confirm that arrived after its callback was spooled
        # makes a duplicate); fewer would be a loss.
        verdict = "ok" if queued + spooled_now >= expected else "LOST MESSAGES"
        figures.durable_check = f"{verdict}: {queued}+{spooled_now} of {expected} msgs"
    return figures


def targets(
    args: AcceptanceRun, workdir: Path, run_id: str, emulator_host: str | None = None
) -> list[Target]:
    """Bare FastAPI; the producer per PUBLISH_MODE (and the ``baseline`` checkout's, and with
    Pub/Sub on the emulator at ``emulator_host``), ``repeat`` rounds; the producer with one
    message per id."""
    python = sys.executable
    ipm = args.ids_per_message or ProducerSettings.model_fields["ids_per_message"].default
    chosen: list[Target] = []

    def producer(name: str, ids_per_message: int, rate: float | None = None, **env: str) -> Target:
        key = f"{run_id}_{len(chosen)}"
        queue = f"bench_producer_{key}"
        return Target(
            name,
            [python, "-m", "producer"],
            {
                "AMQP_URI": AMQP_URI,
                "QUEUE_NAME": queue,
                "PRODUCER_HOST": "127.0.0.1",
                "PRODUCER_PORT": "{port}",
                "SPOOL_PATH": str(workdir / f"spool_{key}.sqlite3"),
                "IDS_PER_MESSAGE": str(ids_per_message),
                **env,
            },
            queue=queue,
            ids_per_message=ids_per_message,
            fixed_rate=rate,
        )

    def add(target: Target, column: str, round_: int) -> None:
        target.column, target.round = column, round_
        if args.repeat > 1 and column != PER_ID:
            target.name = f"{column} #{round_}"
        chosen.append(target)

    for round_ in range(1, args.repeat + 1):
        # Rounds alternate every column under comparison, bare FastAPI included, so that a
        # neighbour's load drifting during the run does not favour whichever was measured first.
        add(Target(BARE, [python, "-m", "bench.producer_bare_app", "{port}"]), BARE, round_)
        if args.baseline is not None:
            # The other checkout's code (PYTHONPATH), its own defaults (no PUBLISH_MODE).
            baseline = str(args.baseline.resolve())
            add(producer("baseline", ipm, PYTHONPATH=baseline), "baseline", round_)
        for mode in args.publish_modes:
            label = "producer" if mode is PublishMode.PIPELINE else str(mode)
            column = f"{label} (IDS_PER_MESSAGE={ipm})"
            add(producer(column, ipm, PUBLISH_MODE=mode), column, round_)
        if emulator_host is not None:
            column = f"pubsub emulator (IDS_PER_MESSAGE={ipm})"
            target = producer(
                column,
                ipm,
                BROKER="pubsub",
                PUBSUB_PROJECT_ID=PUBSUB_PROJECT,
                PUBSUB_EMULATOR_HOST=emulator_host,
            )
            target.received = pubsub_received(emulator_host)
            add(target, column, round_)
    if args.per_id:
        # One message per id tops out near 100 callbacks/s: offering it --rate would only
        # grow the spool (and the shared broker) by 100,000 messages a second.
        add(producer(PER_ID, 1, rate=min(args.rate, 50.0)), PER_ID, 1)
    return chosen


def columns(results: list[tuple[Target, Figures]]) -> dict[str, dict[int, Figures]]:
    """Each column's figures by round."""
    by_column: dict[str, dict[int, Figures]] = {}
    for target, figures in results:
        by_column.setdefault(target.column, {})[target.round] = figures
    return by_column


def vs_bare(results: list[tuple[Target, Figures]], column: str) -> Spread:
    """``column``'s rate over bare FastAPI's of the same round, round by round."""
    by_column = columns(results)
    bare, measured = by_column.get(BARE, {}), by_column.get(column, {})
    return Spread.of(f.rate / bare[r].rate for r, f in measured.items() if r in bare)


def fixed_p99_ms(results: list[tuple[Target, Figures]], column: str) -> tuple[Spread, int]:
    """``column``'s open-loop tail latency per round, and the fewest samples behind one."""
    measured = columns(results).get(column, {}).values()
    q = common_quantile(f.latencies for f in measured)
    spread = Spread.of(1000 * at(f.latencies, q).value for f in measured)
    return spread, min((len(f.latencies) for f in measured), default=0)


async def acceptance(
    args: AcceptanceRun, progress: Callable[[str], None] | None = None
) -> list[tuple[Target, Figures]]:
    """Measure each target in turn (one at a time: they share the machine)."""
    bodies = make_bodies()
    run_id = uuid.uuid4().hex[:8]
    results = []
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="producer_bench_"))
        emulator_host = None
        if args.pubsub:
            from tests.support.pubsub_emulator import find_emulator, running_emulator

            emulator_host = stack.enter_context(running_emulator(find_emulator())).host
        workdir = Path(tmp)
        script = wrk_script(bodies, workdir)
        chosen = targets(args, workdir, run_id, emulator_host)
        # Started together (an idle target costs nothing), measured one at a time.
        running = [start(target, workdir) for target in chosen]
        try:
            pairs = list(zip(chosen, running, strict=True))
            await asyncio.gather(*(wait_serving(r, t.queue is not None) for t, r in pairs))
            for target, started in pairs:
                if progress is not None:
                    progress(target.name)
                results.append((target, await measure(target, started, script, bodies, args)))
        finally:
            for started in running:
                started.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="wrk run, seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="wrk warm-up, seconds")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--rate", type=float, default=500.0, help="fixed-rate run, callbacks/s")
    parser.add_argument("--fixed-duration", type=float, default=10.0, help="fixed-rate run, s")
    parser.add_argument("--ids-per-message", type=int, default=None, help="default: producer's")
    parser.add_argument("--install-wrk", action="store_true", help="apt-get install wrk if missing")
    parser.add_argument(
        "--publish-modes",
        default=PublishMode.PIPELINE.value,
        type=publish_modes,
        help="comma-separated PUBLISH_MODEs to measure, e.g. pipeline,standard (default: pipeline)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="a checkout of another commit: its producer runs as one more column",
    )
    parser.add_argument(
        "--no-per-id", action="store_true", help="skip the IDS_PER_MESSAGE=1 producer"
    )
    parser.add_argument(
        "--pubsub",
        action="store_true",
        help="add the producer with BROKER=pubsub against Google's emulator (not the service)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        choices=range(1, 10),
        metavar="N",
        help="measure every column N times, alternating (1 to 9; default 3)",
    )
    args = parser.parse_args()
    if args.baseline is not None and not (args.baseline / "producer" / "__main__.py").is_file():
        parser.error(f"--baseline {args.baseline}: not a lastseen checkout (no producer/)")

    wrk = find_wrk(args.install_wrk)
    print(f"machine: {machine()}")
    print(f"wrk: {subprocess.run([wrk, '-v'], capture_output=True, text=True).stdout.split()[1]}")
    run = AcceptanceRun(
        args.duration,
        args.warmup,
        args.connections,
        args.rate,
        args.fixed_duration,
        args.ids_per_message,
        wrk,
        tuple(args.publish_modes),
        args.baseline,
        not args.no_per_id,
        args.repeat,
        args.pubsub,
    )
    results = asyncio.run(acceptance(run))
    print_table([t for t, _ in results], [f for _, f in results], run)
    print(f"load after: {'/'.join(Path('/proc/loadavg').read_text().split()[:3])}")


def publish_modes(text: str) -> list[PublishMode]:
    """``"pipeline,standard"`` → both modes, in that order."""
    try:
        return [PublishMode(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        choices = ", ".join(mode.value for mode in PublishMode)
        raise argparse.ArgumentTypeError(f"{text!r}: choose from {choices}") from None


def print_table(targets: list[Target], results: list[Figures], args: AcceptanceRun) -> None:
    bare = {t.round: r.rate for t, r in zip(targets, results, strict=True) if t.column == BARE}
    width = 34
    rows = [
        ("", [t.name for t in targets]),
        (
            f"wrk -c{args.connections}: callbacks/s",
            [f"{r.rate:,.0f}" for r in results],
        ),
        (
            "  vs bare (same round)",
            [f"{r.rate / bare[t.round]:.2f}" for t, r in zip(targets, results, strict=True)],
        ),
        ("  p50 / p99 ms", [f"{r.p50_ms:.1f} / {r.p99_ms:.1f}" for r in results]),
        ("  wrk errors", [r.errors or "none" for r in results]),
        ("  CPU ms per callback", [f"{r.saturated_cpu_ms_per_callback:.3f}" for r in results]),
        (
            "open loop: offered / achieved",
            [
                f"{t.fixed_rate or args.rate:g}/s / {r.fixed_rate:,.0f}/s"
                for t, r in zip(targets, results, strict=True)
            ],
        ),
        (
            "  p50 / p99 / max ms",
            [
                f"{r.fixed_p50_ms:.1f} / {r.fixed_p99_ms:.1f} / {r.fixed_max_ms:.0f}"
                for r in results
            ],
        ),
        ("  failed or non-2xx", [str(r.fixed_failed) for r in results]),
        ("  CPU ms per callback", [f"{r.cpu_ms_per_callback:.3f}" for r in results]),
        (
            "callbacks spooled (all runs)",
            [
                str(r.spooled_callbacks) if t.queue else "-"
                for t, r in zip(targets, results, strict=True)
            ],
        ),
        ("durable after the runs", [r.durable_check for r in results]),
    ]
    for label, cells in rows:
        print(label.ljust(width) + "".join(cell.ljust(width) for cell in cells))
    print_summary(list(zip(targets, results, strict=True)))


def print_summary(results: list[tuple[Target, Figures]]) -> None:
    """Per column, over its rounds: callbacks/s against bare FastAPI and the open-loop tail."""
    for column in columns(results):
        if column == BARE:
            continue
        ratio = vs_bare(results, column)
        tail, samples = fixed_p99_ms(results, column)
        print(
            f"{column}: vs bare {ratio.label(2)}; open-loop tail {tail.label(1, ' ms')}, "
            f"at least {samples:,} callbacks a round"
        )


if __name__ == "__main__":
    main()
