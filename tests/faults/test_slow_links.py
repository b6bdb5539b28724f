"""Slow, lossy links under load (issue 22, scenarios 4 and 5): 200 ms ± 50 ms added to each round
trip (100 ms ± 25 ms each way) and 2 % of segments 'lost' (delivered a retransmission timeout
late, :mod:`tests.support.link_shaper`), for 15 s, on one path while the rest stays fast.

At the status API's real delays (mean 2.3 s) 200 ms more per lookup barely changes the consumers'
capacity, so the tier's in-flight bound, sized to drain backlogs, would never bind on the slow
link. To see the throughput follow the bound, the consumers run with a bound below the offered
load for that scenario (restarted with it, and restarted with the tier's again at its end).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from common.durations import parse_duration
from consumer.subscription import prefetch_for
from tests.support.link_shaper import Link
from tests.support.metrics import total

from .harness import KNOBS, LONGEST_LOOKUP_S, FaultsSuite

pytestmark = pytest.mark.faults

SLOW_LOSSY = Link(latency=0.1, jitter=0.025, loss=0.02)
SLOW_S = 15.0
# 2 x 75 in flight / ~2.5 s per lookup on the slow link ≈ 60 lookups/s, well below the ~100 ids/s
# offered: the bound binds, and a backlog waits (2 x 300 / 2.3 s ≈ 260 ids/s drain it after).
BOUNDED_CONSUMERS = 75
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


@contextlib.asynccontextmanager
async def consumers_bounded_at(faults: FaultsSuite, max_consumers: int) -> AsyncIterator[None]:
    """The consumers restarted with ``MAX_CONSUMERS`` ``max_consumers``, and with the tier's own
    again on the way out (both at once, each a graceful stop: SIGTERM, in-flight ids finish or
    go back to the queue). The prefetch is fixed from the product's own formula: sized from the
    first messages it would start at 100 ids a message, too few of ours (~10) to fill the bound."""
    suite = faults.suite
    tier_entries = {n: e for n, e in suite.entries.items() if e.module == "consumer"}
    ids_per_message = int(faults.knobs["TESTER_MAX_IDS"]) / 2
    bounded = {
        "MAX_CONSUMERS": str(max_consumers),
        "PREFETCH": str(prefetch_for(max_consumers, ids_per_message)),
    }

    async def restart_consumers() -> None:
        await asyncio.gather(*(asyncio.to_thread(suite.restart, name) for name in tier_entries))

    for name, entry in tier_entries.items():
        suite.entries[name] = dataclasses.replace(entry, env={**entry.env, **bounded})
    try:
        await restart_consumers()
        yield
    finally:
        suite.entries.update(tier_entries)
        await restart_consumers()


async def test_slow_lossy_link_to_the_status_api(faults: FaultsSuite) -> None:
    in_flight_bound = len(faults.consumer_metrics) * BOUNDED_CONSUMERS
    scenario = await faults.begin(
        "slow lossy status link",
        f"consumers restarted with MAX_CONSUMERS {BOUNDED_CONSUMERS} (below the load at the real "
        f"delays); consumers ↔ status API: {ROUND_TRIP}, for {SLOW_S:.0f} s; then MAX_CONSUMERS "
        f"{KNOBS['CONSUMER_MAX_CONSUMERS']} again (a restart)",
    )
    scenario.fault_begins()
    async with consumers_bounded_at(faults, BOUNDED_CONSUMERS):
        faults.status_proxy.shape(SLOW_LOSSY, seed=4)
        # Lookups begun on the fast link are all answered one slowest lookup in: measure from
        # then, so that every lookup counted crossed the slow link.
        settled_in = LONGEST_LOOKUP_S + 0.5
        await asyncio.sleep(settled_in)
        first = await asyncio.to_thread(Lookups.now, faults)
        await asyncio.sleep(SLOW_S - settled_in)  # the slow stretch's length
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
    # stay at the bound while the backlog waits, and never above it; the bound, not the offered
    # load, sets the pace.
    assert 0.5 * in_flight_bound <= in_flight <= 1.1 * in_flight_bound, row.notes
    assert rate < 0.9 * row.ids_per_s, f"the bound did not bind: {row.notes}"
    fastest_lookup_s = parse_duration(KNOBS["TESTER_DELAY_MIN"]) + 2 * (
        SLOW_LOSSY.latency - SLOW_LOSSY.jitter
    )
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
