"""The new metric objects on their own: what one observation adds, and the spool's oldest age."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from consumer.metrics import ConsumerMetrics
from producer.metrics import ProducerMetrics
from producer.spool import OutgoingMessage, Spool
from routine.metrics import RoutineMetrics
from tester import metrics as tester_metrics
from tester.ledger import CallbackRecord

pytestmark = pytest.mark.unit


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_lag_is_observed_once_per_stored_row_from_its_receive_time() -> None:
    registry = CollectorRegistry()
    metrics = ConsumerMetrics(registry)
    now = datetime.now(UTC)
    metrics.stored([now - timedelta(seconds=2), now - timedelta(seconds=2), now])
    assert sample(registry, "lastseen_consumer_lag_seconds_count") == 3
    assert sample(registry, "lastseen_consumer_lag_seconds_bucket", le="1.0") == 1
    assert sample(registry, "lastseen_consumer_lag_seconds_bucket", le="3.0") == 3
    assert 4 <= (sample(registry, "lastseen_consumer_lag_seconds_sum") or 0) < 5


def test_status_outcomes_and_flushes() -> None:
    registry = CollectorRegistry()
    metrics = ConsumerMetrics(registry)
    for outcome in ("online", "offline", "failed"):
        assert sample(registry, "lastseen_consumer_status_seconds_count", outcome=outcome) == 0
    metrics.looked_up("offline", 0.4)
    assert sample(registry, "lastseen_consumer_status_seconds_count", outcome="offline") == 1
    assert sample(registry, "lastseen_consumer_status_seconds_bucket", outcome="offline", le="0.5")
    metrics.flushed(0.003, 120)
    assert sample(registry, "lastseen_consumer_flush_rows_sum") == 120
    assert sample(registry, "lastseen_consumer_flush_seconds_bucket", le="0.005") == 1


def test_every_outcome_has_a_series_before_it_happens() -> None:
    registry = CollectorRegistry()
    ProducerMetrics(registry, spool_depth=lambda: 0)
    RoutineMetrics(registry, object_ttl=30)
    for outcome in ("confirmed", "spooled", "rejected", "unauthorized", "unavailable"):
        assert sample(registry, "lastseen_producer_callbacks_total", outcome=outcome) == 0
    for outcome in ("ran", "skipped", "failed"):
        assert sample(registry, "lastseen_routine_ticks_total", outcome=outcome) == 0
    assert sample(registry, "lastseen_routine_object_ttl_seconds") == 30


def test_the_tester_counts_callbacks_by_status() -> None:
    metrics = tester_metrics.TesterMetrics(CollectorRegistry())
    sent = datetime.now(UTC)
    metrics.sent(CallbackRecord(1, sent, [1, 2, 2], 202, None, 0.004))
    metrics.sent(CallbackRecord(2, sent, [3], None, "timeout", 1.0))
    registry = metrics.registry
    assert sample(registry, "lastseen_tester_callbacks_total", status="202") == 1
    assert sample(registry, "lastseen_tester_callbacks_total", status="none") == 1
    assert sample(registry, "lastseen_tester_ids_total") == 4
    assert sample(registry, "lastseen_tester_callback_seconds_sum") == pytest.approx(1.004)


async def test_the_spools_oldest_age(tmp_path: Path) -> None:
    spool = await Spool.open(tmp_path / "spool.sqlite3")
    try:
        assert await spool.oldest_age() == 0
        before = time.time()
        await spool.append([OutgoingMessage("a", b"1")], "cb")
        await spool.append([OutgoingMessage("b", b"2")], "cb")
        age = await spool.oldest_age()
        assert 0 <= age <= time.time() - before + 0.01
        oldest = await spool.oldest(1)
        await spool.delete([oldest[0].seq])
        assert await spool.oldest_age() <= age + 0.5
        await spool.delete([entry.seq for entry in await spool.oldest(10)])
        assert await spool.oldest_age() == 0
    finally:
        await spool.close()
