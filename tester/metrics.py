"""The tester's own figures, as Prometheus metrics at ``GET /metrics``: what it sent and what came
back, so a dashboard can set the suite's intake beside what the client saw."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from common.metrics import service_registry
from tester.ledger import CallbackRecord

# The callback client gives up after TESTER_CALLBACK_TIMEOUT (1 s by default).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5)


class TesterMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else service_registry()
        self.callbacks = Counter(
            "lastseen_tester_callbacks",
            "callbacks sent, by the HTTP status of the answer ('none': no answer in time)",
            ["status"],
            registry=self.registry,
        )
        self.ids = Counter(
            "lastseen_tester_ids",
            "ids sent in callbacks (repeats within a callback included)",
            registry=self.registry,
        )
        self.latency = Histogram(
            "lastseen_tester_callback_seconds",
            "from sending a callback to its answer or the client giving up",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def sent(self, record: CallbackRecord) -> None:
        self.callbacks.labels("none" if record.status is None else str(record.status)).inc()
        self.ids.inc(len(record.object_ids))
        self.latency.observe(record.latency)
