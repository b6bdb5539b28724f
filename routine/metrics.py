from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

TICK_OUTCOMES = ("ran", "skipped", "failed")


class RoutineMetrics:
    def __init__(self, registry: CollectorRegistry, object_ttl: float = 30.0) -> None:
        self.deleted = Counter(
            "lastseen_routine_deleted_rows",
            "rows deleted because their last_seen was older than OBJECT_TTL",
            registry=registry,
        )
        self.ticks = Counter(
            "lastseen_routine_ticks",
            "expiry runs, by outcome (ran, skipped: another replica held the lock, failed)",
            ["outcome"],
            registry=registry,
        )
        for outcome in TICK_OUTCOMES:
            self.ticks.labels(outcome)  # every outcome has a series from the start, for alerts
        self.duration = Histogram(
            "lastseen_routine_tick_seconds",
            "duration of one expiry run",
            buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30),
            registry=registry,
        )
        self.rows_behind = Gauge(
            "lastseen_routine_rows_behind",
            "rows older than OBJECT_TTL right after the last tick that ran (should be 0)",
            registry=registry,
        )
        # For the lag alert: "p99 lag above OBJECT_TTL" compares with the configured TTL.
        self.object_ttl = Gauge(
            "lastseen_routine_object_ttl_seconds",
            "OBJECT_TTL: objects not seen for this long are deleted",
            registry=registry,
        )
        self.object_ttl.set(object_ttl)
