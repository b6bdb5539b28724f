"""Prometheus metrics read from the worker's own counters at scrape time, so the hot path pays
nothing for them."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

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


def register(worker: Worker) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(WorkerCollector(worker))
    return registry
