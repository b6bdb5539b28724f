"""The capacity plan's arithmetic, on made-up figures."""

from __future__ import annotations

import math

import pytest

from bench.capacity_plan import (
    CONSUMER_MAX_CONSUMERS,
    KEPT,
    MEAN_DELAY_S,
    UTILISATION,
    Measured,
    bottleneck,
    keep_hand_written,
    plan,
    render,
)

pytestmark = pytest.mark.unit


def figures(rows_per_core: float = 60_000.0, wal_bytes: float = 150.0) -> Measured:
    return Measured(
        consumer={
            "ids_per_s": 3000.0,
            "cpu_ms_per_id": 0.1,
            "peak_rss_mb": 128.0,
            "peak_in_flight": 7000.0,
            "max_backlog_messages": 0.0,
            "window_s": 60.0,
            "offered_ids_per_s": 3000.0,
            "max_consumers": 8000.0,
        },
        postgres={
            "refresh_rows_per_s": 50_000.0,
            "refresh_rows_per_core_backends": rows_per_core * 1.2,
            "refresh_rows_per_core": rows_per_core,
            "refresh_wal_bytes_per_row": wal_bytes,
            "bytes_per_row": 100.0,
            "churn_rows_per_s": 40_000.0,
            "churn_rows_per_core": rows_per_core / 2,
            "routine_backlog_rows": 200_000.0,
            "routine_kept_up": 0.0,
            "routine_delete_rows_per_s": 100_000.0,
            "churn_window_s": 30.0,
            "churn_wal_bytes_per_row": wal_bytes,
            "routine_peak_rss_mb": 50.0,
            "churn_ttl_s": 5.0,
        },
        broker={
            "messages_per_s": 2000.0,
            "messages_per_core": 4000.0,
            "message_bytes": 2300.0,
            "idle_cores": 0.01,
        },
        producer={
            "callbacks_per_s": 1500.0,
            "callbacks_per_core": 4000.0,
            "spooled_fraction": 0.0,
            "peak_rss_mb": 70.0,
        },
    )


def test_consumer_pods_follow_the_in_flight_bound() -> None:
    tiers = plan(figures())
    per_pod = min(3000.0, CONSUMER_MAX_CONSUMERS / MEAN_DELAY_S) * UTILISATION
    assert [t.consumer_pods for t in tiers] == [
        max(2, math.ceil(ids / per_pod)) for ids in (10_000, 100_000, 1_000_000)
    ]
    assert tiers[1].consumer_pods == 48  # 100 k / (3,000 x 70 %)
    assert tiers[-1].consumer_cores == pytest.approx(1_000_000 * 0.1 / 1000)
    assert tiers[0].producer_pods == 2, "never fewer than two producers"


def test_the_dearer_database_regime_sizes_the_primary() -> None:
    [small, _, big] = plan(figures())
    # churn costs twice the refresh per row here
    assert big.primary_cores_worst == pytest.approx(big.primary_cores_churn)
    assert big.primary_cores_worst == pytest.approx(500_000 / 30_000 / UTILISATION)
    assert small.rows_churn == pytest.approx(5_000 * 33)
    assert small.db_gb_churn == pytest.approx(5_000 * 33 * 100 / 1e9)


def test_the_bottleneck_moves_to_the_primary_at_a_million() -> None:
    [small, middle, big] = plan(figures())
    assert small.partitions == middle.partitions == 1
    assert big.partitions >= 2  # 500 k upserts/s: 24 cores and 75 MB/s of WAL
    assert "partition `object` by id" in bottleneck(big)
    assert "partition" not in bottleneck(small)
    # 500 k deletes/s against one routine's 100 k: one routine per partition.
    assert big.routine_load == pytest.approx(5.0)
    assert "one routine per partition" in bottleneck(big)
    assert "routine" not in bottleneck(small)
    # A database ten times cheaper per row keeps one primary at 1 M ids/s.
    assert plan(figures(rows_per_core=600_000.0, wal_bytes=15.0))[-1].partitions == 1


def test_the_document_says_what_was_measured_and_what_was_assumed() -> None:
    text = render(figures(), "smoke", "python -m bench.capacity --smoke")
    assert "## Measured here" in text and "## Assumptions (not measured)" in text
    assert "**0.100 ms CPU per id**" in text
    assert text.count("ids/s |") >= 1 and "1 M ids/s" in text


def test_a_new_run_keeps_the_hand_written_redis_plan() -> None:
    previous = f"# Capacity plan\nold figures\n\n{KEPT}\n\n## Redis Cluster\nby hand\n"
    kept = keep_hand_written("# Capacity plan\nnew figures\n", previous)
    assert kept == f"# Capacity plan\nnew figures\n\n{KEPT}\n\n## Redis Cluster\nby hand\n"
    assert keep_hand_written("# new\n", "# old, nothing by hand\n") == "# new\n"
