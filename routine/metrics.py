from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class RoutineMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
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
        self.duration = Histogram(
            "lastseen_routine_tick_seconds",
            "duration of one expiry run",
            buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30),
            registry=registry,
        )
