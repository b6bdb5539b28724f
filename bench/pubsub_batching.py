"""The Pub/Sub publisher's batch latency (``BatchSettings.max_latency``), measured through the
producer's own publishing path (:class:`producer.pubsub_publisher.PubSubPublisher`) against
Google's emulator.

    flock -o /tmp/lastseen-heavy.lock .venv/bin/python -m bench.pubsub_batching

For each ``max_latency`` (default 0, 1, 5 and 10 ms, the client's default) and each concurrency
(1 caller, and 32 callers as under a burst), callers publish one callback of 200 ids at a time
and wait for its message id, as a callback waits before its 202: callbacks/s, the median and
99th percentile of one publish, and the CPU of this process (all threads) per callback. Rounds
alternate the settings so the machine's load falls on all of them. The emulator is not the
service: it answers in about a millisecond, the service in tens, which a real deployment adds to
every figure here.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import time
import uuid
from datetime import UTC, datetime

from common.broker.pubsub_topology import PubSubSettings, PubSubTopology
from common.messages import IdsMessage, OutgoingMessage
from producer.pubsub_publisher import PubSubPublisher

PROJECT = "lastseen-bench"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(host: str, latency: float, callers: int, callbacks: int) -> dict[str, float]:
    topology = PubSubTopology.for_queue(PROJECT, f"bench-{uuid.uuid4().hex[:8]}")
    publisher = PubSubPublisher(
        PubSubSettings(PROJECT, host), topology, max_backoff=1.0, batch_max_latency=latency
    )
    body = IdsMessage("bench", datetime.now(UTC), list(range(10**12, 10**12 + 200))).encode()
    took: list[float] = []

    async def caller(count: int) -> None:
        for n in range(count):
            message = OutgoingMessage(f"bench.{n}", body)
            started = time.perf_counter()
            if await publisher.publish([message], 5.0):
                raise RuntimeError("a publish went without its message id")
            took.append(time.perf_counter() - started)

    async with publisher.running():
        await asyncio.wait_for(publisher.wait_connected(), 30)
        await caller(20)  # warm up: channel, threads
        took.clear()
        cpu, wall = cpu_seconds(), time.perf_counter()
        await asyncio.gather(*(caller(callbacks // callers) for _ in range(callers)))
        cpu, wall = cpu_seconds() - cpu, time.perf_counter() - wall
    took.sort()
    return {
        "per_s": len(took) / wall,
        "p50_ms": statistics.median(took) * 1000,
        "p99_ms": took[int(len(took) * 0.99)] * 1000,
        "cpu_us": cpu / len(took) * 1e6,
    }


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}–{max(values):.1f})"


async def run(args: argparse.Namespace) -> None:
    from tests.support.pubsub_emulator import find_emulator, running_emulator

    latencies = [float(ms) / 1000 for ms in args.latencies_ms.split(",")]
    results: dict[tuple[float, int], list[dict[str, float]]] = {}
    with running_emulator(find_emulator()) as emulator:
        for round_ in range(args.repeats):
            order = latencies if round_ % 2 == 0 else latencies[::-1]
            for latency in order:
                for callers in (1, args.callers):
                    count = args.callbacks if callers == 1 else args.callbacks * 4
                    result = await measure(emulator.host, latency, callers, count)
                    results.setdefault((latency, callers), []).append(result)
    print(
        f"{args.repeats} rounds; per round {args.callbacks} callbacks with 1 caller, "
        f"{args.callbacks * 4} with {args.callers}; median (range) over the rounds"
    )
    print("| max_latency | callers | callbacks/s | p50 ms | p99 ms | CPU µs per callback |")
    print("| --- | --- | --- | --- | --- | --- |")
    for (latency, callers), rounds in results.items():
        columns = [spread([r[key] for r in rounds]) for key in ("per_s", "p50_ms", "p99_ms")]
        print(
            f"| {latency * 1000:g} ms | {callers} | {' | '.join(columns)} | "
            f"{spread([r['cpu_us'] for r in rounds])} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latencies-ms", default="0,1,5,10")
    parser.add_argument("--callers", type=int, default=32)
    parser.add_argument("--callbacks", type=int, default=800)
    parser.add_argument("--repeats", type=int, default=3)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
