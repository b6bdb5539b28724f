"""Issue 23: a few clients holding every connection they can (heads and bodies trickled a byte at a
time, silent after connecting, idle kept-alive) do not take POST /callback away from the others.

The real producer, on the real RabbitMQ, with its open-file limit lowered to 4,096 so that a flood
beyond it takes ~5,000 sockets. Run alone: ``flock -o /tmp/lastseen-heavy.lock .venv/bin/python
-m pytest tests/slowclients -q``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import pytest

from tests.support.waiting import eventually, wait_until

from .conftest import PRODUCER_OPEN_FILES, Flood, Producer

pytestmark = pytest.mark.slowclients

# Sockets per kind of misbehaviour; together beyond the producer's open-file limit.
FLOOD = {"head": 1800, "silent": 1700, "idle": 1200, "body": 500}
CALLBACK_EVERY = 0.1
WITHIN = 1.0
MEASURE_FOR = 12.0
# The producer's RSS may grow by the connections it holds (~3,000), not by the flood's churn.
RSS_GROWTH_BOUND = 150 * 1024 * 1024
# Descriptors the producer may hold after the flood beyond its baseline (a client's keep-alive).
FD_SLACK = 8


async def callbacks_during(
    producer: Producer, seconds: float, sample: Callable[[], None]
) -> list[tuple[int | None, float]]:
    """A well-behaved client: one callback every ``CALLBACK_EVERY``; (status, seconds) each."""
    results: list[tuple[int | None, float]] = []

    async def one(client: httpx.AsyncClient, object_id: int) -> None:
        started = time.perf_counter()
        try:
            response = await client.post("/callback", json={"object_ids": [object_id]})
            status: int | None = response.status_code
        except httpx.TransportError:
            status = None
        results.append((status, time.perf_counter() - started))

    timeout = httpx.Timeout(WITHIN + 1.0)
    async with httpx.AsyncClient(base_url=producer.url, timeout=timeout) as client:
        sent: list[asyncio.Task[None]] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            sent.append(asyncio.create_task(one(client, len(sent))))
            sample()
            await asyncio.sleep(CALLBACK_EVERY)
        await asyncio.gather(*sent)
    return results


async def test_callbacks_are_answered_while_slow_clients_hold_more_connections_than_files(
    start_producer: Callable[..., Producer], flood: Callable[..., Flood]
) -> None:
    producer = start_producer()
    assert sum(FLOOD.values()) > PRODUCER_OPEN_FILES
    baseline_files, baseline_rss = producer.open_files(), producer.rss_bytes()
    attack = flood(producer.port, pause=1.0, seconds=90.0, **FLOOD)

    # The flood has filled the producer up to its cap and it is making room.
    await eventually(
        lambda: (
            producer.open_files() >= 0.95 * producer.max_connections
            and producer.closed_counts()["evicted"] > 0
        ),
        timeout=30,
        interval=0.2,
        what="the flood at the producer's connection cap",
    )
    peak = {"files": 0, "rss": 0}

    def sample() -> None:
        peak["files"] = max(peak["files"], producer.open_files())
        peak["rss"] = max(peak["rss"], producer.rss_bytes())

    results = await callbacks_during(producer, MEASURE_FOR, sample)
    reports = attack.stop()

    answered = sum(1 for status, took in results if status == 202 and took <= WITHIN)
    slowest = sorted(took for _, took in results)
    assert answered >= 0.95 * len(results), (answered, len(results), slowest[-10:])
    # The flood went on all along: its connections kept being closed and opened again.
    assert sum(report.get("closed_by_server", 0) for report in reports) > 1000, reports
    assert peak["files"] < PRODUCER_OPEN_FILES, peak
    assert peak["rss"] - baseline_rss < RSS_GROWTH_BOUND, (baseline_rss, peak)
    assert "Too many open files" not in producer.process.output()

    # Nothing left behind: the descriptors return to the baseline once the flood is gone.
    wait_until(
        lambda: producer.open_files() <= baseline_files + FD_SLACK,
        timeout=15,
        what="the producer's descriptors back at the baseline",
    )
    assert producer.process.running()
    print(  # noqa: T201 - the figures for docs/slow-clients.md, shown with -s
        f"\ncallbacks {answered}/{len(results)} answered 202 within {WITHIN}s, "
        f"slowest {slowest[-1]:.3f}s, p95 {slowest[int(0.95 * len(slowest))]:.3f}s; "
        f"peak files {peak['files']} (cap {producer.max_connections}, limit "
        f"{PRODUCER_OPEN_FILES}); RSS {baseline_rss >> 20} MiB -> peak {peak['rss'] >> 20} MiB; "
        f"closed by the producer {producer.closed_counts()}; flood {reports}"
    )


def test_heads_and_bodies_past_their_deadlines_are_closed(
    start_producer: Callable[..., Producer], flood: Callable[..., Flood]
) -> None:
    producer = start_producer(PRODUCER_HEADER_TIMEOUT="1s", PRODUCER_BODY_TIMEOUT="2s")
    baseline_files = producer.open_files()
    # One byte every 5 s, as in the issue: no head or body ever completes before its deadline.
    attack = flood(producer.port, pause=5.0, seconds=4.5, silent=100, head=100, body=100)
    reports = {report["mode"]: report for report in attack.reports(timeout=30)}

    # The flood's own pause (5 s) is longer than its run: only the producer closed them.
    for mode in ("silent", "head", "body"):
        assert reports[mode].get("closed_by_server", 0) >= 100, reports
    # A head too slow is told so, as Go's and HAProxy's servers do.
    for mode in ("silent", "head"):
        assert reports[mode].get("answered_408", 0) >= 100, reports
    wait_until(
        lambda: producer.open_files() <= baseline_files + FD_SLACK,
        timeout=10,
        what="the producer's descriptors back at the baseline",
    )
