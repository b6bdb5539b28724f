"""Prometheus metrics read from the worker's own counters at scrape time, so the hot path pays
nothing for them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from common.store import ObjectStore
    from consumer.worker import Worker


class WorkerCollector(Collector):
    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    def collect(self) -> Iterator[Metric]:
        for name, help_text, value in self._worker.stats.counters():
            yield CounterMetricFamily(f"lastseen_consumer_{name}", help_text, value=value)
        yield GaugeMetricFamily(
            "lastseen_consumer_status_in_flight",
            "status requests in flight (at most MAX_CONSUMERS)",
            value=self._worker.in_flight,
        )
        yield GaugeMetricFamily(
            "lastseen_consumer_paused",
            "1 while intake is paused because the database cannot be written",
            value=int(self._worker.paused),
        )


class BacklogCollector(Collector):
    """The age of the oldest message this consumer holds unacked: a message stuck behind a
    failing hand-off or a paused writer shows here long before the queue grows."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    def collect(self) -> Iterator[Metric]:
        oldest = self._worker.oldest_arrival()
        yield GaugeMetricFamily(
            "lastseen_consumer_oldest_unacked_age_seconds",
            "age of the oldest work message received and not yet acked (0: none)",
            value=0.0 if oldest is None else time.monotonic() - oldest,
        )


# Status answers take 0.3-4.3 s in the assessment; timeouts end at STATUS_TIMEOUT (10 s).
STATUS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 4, 5, 7.5, 10, 15, 30)
# From the callback's arrival at the producer to the row's commit. The alert is at OBJECT_TTL
# (30 s by default): buckets are dense up to it and a few beyond.
LAG_BUCKETS = (0.25, 0.5, 1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 25, 30, 45, 60, 120, 300, 600)
FLUSH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15)
ROWS_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
STATUS_OUTCOMES = ("online", "offline", "failed")


class ConsumerMetrics:
    """Latency histograms, observed at one call each on the hot path (children bound once)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        status = Histogram(
            "lastseen_consumer_status_seconds",
            "time of one status lookup, by outcome (online, offline, failed)",
            ["outcome"],
            buckets=STATUS_BUCKETS,
            registry=registry,
        )
        # Bound once: every outcome has a series from the start, and no label lookup per id.
        self.status = {outcome: status.labels(outcome) for outcome in STATUS_OUTCOMES}
        self.lag = Histogram(
            "lastseen_consumer_lag_seconds",
            "end-to-end lag of each stored row: from the producer receiving the callback to the "
            "commit of the row",
            buckets=LAG_BUCKETS,
            registry=registry,
        )
        self.flush = Histogram(
            "lastseen_consumer_flush_seconds",
            "duration of the upsert statement of one committed batch",
            buckets=FLUSH_BUCKETS,
            registry=registry,
        )
        self.flush_rows = Histogram(
            "lastseen_consumer_flush_rows",
            "rows in one committed batch",
            buckets=ROWS_BUCKETS,
            registry=registry,
        )

    def looked_up(self, outcome: str, seconds: float) -> None:
        self.status[outcome].observe(seconds)

    def stored(self, received: list[datetime]) -> None:
        """Rows committed now, each with its callback's receive time."""
        now = datetime.now(UTC)
        observe = self.lag.observe
        for received_at in received:
            observe((now - received_at).total_seconds())

    def flushed(self, seconds: float, rows: int) -> None:
        self.flush.observe(seconds)
        self.flush_rows.observe(rows)


class StoreCollector(Collector):
    def __init__(self, store: ObjectStore) -> None:
        self._store = store

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "lastseen_consumer_store_overwritten",
            "stored values that were not a time (a Redis key written by someone else) and were "
            "replaced by a write; always 0 on PostgreSQL",
            value=self._store.overwritten,
        )


def register(
    worker: Worker,
    registry: CollectorRegistry | None = None,
    store: ObjectStore | None = None,
) -> CollectorRegistry:
    registry = registry if registry is not None else CollectorRegistry()
    registry.register(WorkerCollector(worker))
    registry.register(BacklogCollector(worker))
    if store is not None:
        registry.register(StoreCollector(store))
    return registry
