from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

OUTCOMES = ("confirmed", "spooled", "rejected", "unauthorized", "unavailable")
# The tester gives up after 1 s; a confirm takes ~2 ms, a spooled callback PUBLISH_TIMEOUT (250 ms).
CALLBACK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.3, 0.5, 0.75, 1, 2.5)


class ProducerMetrics:
    def __init__(self, registry: CollectorRegistry, spool_depth: Callable[[], float]) -> None:
        self.callbacks = Counter(
            "lastseen_producer_callbacks",
            "callbacks answered, by outcome: confirmed, spooled, rejected (4xx), "
            "unauthorized (401), unavailable (503)",
            ["outcome"],
            registry=registry,
        )
        # Every outcome has a series from the start; the children are looked up once here
        # (labels() costs ~0.6 µs, once per callback).
        self.outcomes = {outcome: self.callbacks.labels(outcome) for outcome in OUTCOMES}
        self.ids = Counter(
            "lastseen_producer_ids",
            "unique ids made durable (confirmed or spooled)",
            registry=registry,
        )
        self.spool_depth = Gauge(
            "lastseen_producer_spool_depth",
            "messages in the local spool waiting for the relay",
            registry=registry,
        )
        self.spool_depth.set_function(spool_depth)
        self.callback_seconds = Histogram(
            "lastseen_producer_callback_seconds",
            "time to answer one POST /callback, from the request to the response",
            buckets=CALLBACK_BUCKETS,
            registry=registry,
        )
        self.spool_oldest_age = Gauge(
            "lastseen_producer_spool_oldest_age_seconds",
            "age of the oldest message in the spool (0: empty), read at each scrape",
            registry=registry,
        )
