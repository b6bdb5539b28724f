"""Slow, lossy links under load (issue 22, scenarios 4 and 5): 200 ms ± 50 ms added to each round
trip (100 ms ± 25 ms each way) and 2 % of segments 'lost' (delivered a retransmission timeout
late, :mod:`tests.support.link_shaper`), for 15 s, on one path while the rest stays fast."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import pytest

from tests.support.link_shaper import Link
from tests.support.metrics import total

from .harness import FaultsSuite

pytestmark = pytest.mark.faults

SLOW_LOSSY = Link(latency=0.1, jitter=0.025, loss=0.02)
SLOW_S = 15.0
ROUND_TRIP = f"200 ms ± 50 ms added per round trip, {SLOW_LOSSY.loss * 100:g} % of segments lost"


@dataclass(frozen=True)
class Lookups:
    """The consumers' status lookups so far, from their /metrics."""

    at: float
    count: float
    seconds: float
    retried: float

    @classmethod
    def now(cls, faults: FaultsSuite) -> Lookups:
        urls = faults.consumer_metrics
        return cls(
            at=time.monotonic(),
            count=total(urls, "lastseen_consumer_status_seconds_count"),
            seconds=total(urls, "lastseen_consumer_status_seconds_sum"),
            retried=total(urls, "lastseen_consumer_retried_total"),
        )

    def since(self, earlier: Lookups) -> tuple[float, float, float, float]:
        """(lookups per second, mean seconds per lookup, mean lookups in flight, retries)."""
        count = self.count - earlier.count
        rate = count / (self.at - earlier.at)
        mean = (self.seconds - earlier.seconds) / count if count else 0.0
        return rate, mean, rate * mean, self.retried - earlier.retried


async def spool_peak(faults: FaultsSuite, seconds: float) -> int:
    """The producer's deepest spool over ``seconds`` (the fault's length)."""
    deepest = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready = await asyncio.to_thread(faults.producer_ready)
        deepest = max(deepest, int(ready["spool_depth"]))
        await asyncio.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
    return deepest


async def test_slow_lossy_link_to_the_status_api(faults: FaultsSuite) -> None:
    in_flight_bound = len(faults.consumer_metrics) * int(faults.knobs["CONSUMER_MAX_CONSUMERS"])
    scenario = await faults.begin(
        "slow lossy status link",
        f"consumers ↔ status API: {ROUND_TRIP}, for {SLOW_S:.0f} s",
    )
    scenario.fault_begins()
    faults.status_proxy.shape(SLOW_LOSSY, seed=4)
    # The first lookups on the slow link start with the fast link's backlog-free pace: measure
    # from one slow round trip in.
    await asyncio.sleep(1.0)
    first = await asyncio.to_thread(Lookups.now, faults)
    await asyncio.sleep(SLOW_S - 1.0)  # the slow stretch's length
    last = await asyncio.to_thread(Lookups.now, faults)
    faults.status_proxy.shape(None)
    scenario.fault_ends()
    rate, mean_s, in_flight, retried = last.since(first)
    result = await scenario.settle(
        notes=f"{rate:.0f} status lookups/s at {mean_s * 1000:.0f} ms each: "
        f"{in_flight:.1f} in flight of {in_flight_bound} (Little's law); {retried:.0f} retries; "
        f"{faults.status_proxy.retransmissions} segments retransmitted"
    )
    row = faults.row(result, faults.ledger_after(scenario.start_seq))
    assert row.passed, row.describe()
    # Throughput follows the in-flight bound: lookups in flight (rate x time, Little's law)
    # stay at the bound while the backlog waits, and never above it.
    assert 0.5 * in_flight_bound <= in_flight <= 1.1 * in_flight_bound, row.notes
    fastest_lookup_s = 2 * (SLOW_LOSSY.latency - SLOW_LOSSY.jitter)
    assert rate <= in_flight_bound / fastest_lookup_s, row.notes
    # No retry storm: a lookup late by a retransmission still answers within STATUS_TIMEOUT.
    assert retried <= max(10, 0.01 * (last.count - first.count)), row.notes
    assert faults.status_proxy.retransmissions > 0, "no loss was drawn: the fault was not lossy"


async def test_slow_lossy_link_from_the_producer_to_the_broker(faults: FaultsSuite) -> None:
    scenario = await faults.begin(
        "slow lossy broker link",
        f"producer ↔ RabbitMQ: {ROUND_TRIP}, for {SLOW_S:.0f} s",
    )
    scenario.fault_begins()
    faults.producer_broker_proxy.shape(SLOW_LOSSY, seed=5)
    deepest = await spool_peak(faults, SLOW_S)
    faults.producer_broker_proxy.shape(None)
    scenario.fault_ends()
    result = await scenario.settle(
        notes=f"spool peaked at {deepest} messages; "
        f"{faults.producer_broker_proxy.retransmissions} segments retransmitted"
    )
    row = faults.row(result, faults.ledger_after(scenario.start_seq))
    assert row.passed, row.describe()
