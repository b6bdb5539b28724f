from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge


class ProducerMetrics:
    def __init__(self, registry: CollectorRegistry, spool_depth: Callable[[], float]) -> None:
        self.callbacks = Counter(
            "lastseen_producer_callbacks",
            "callbacks answered, by outcome: confirmed, spooled, rejected (4xx), "
            "unauthorized (401), unavailable (503)",
            ["outcome"],
            registry=registry,
        )
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
