from __future__ import annotations

from pydantic import Field

from common.settings import Duration, PostgresSettings


class RoutineSettings(PostgresSettings):
    routine_interval: Duration = Field(3.0, gt=0, description="time between expiry runs")
    object_ttl: Duration = Field(
        30.0, gt=0, description="delete objects whose last_seen is older than this"
    )
    routine_batch_size: int = Field(
        1000, ge=1, le=1_000_000, description="rows deleted per statement (bounds lock time)"
    )
    # 1,000 rows and 4ms: a batch takes ~2 ms, so deletes still run at ~150,000 rows/s (1,000,000
    # in under 7 s), above one primary's insert rate, and an upsert that meets a batch waits for a
    # short one: upsert p99 during a million-row delete 0.6-1.0x the p99 without it, against
    # 1.8-2.9x with 5,000 rows and 20ms (docs/benchmarks/NOTES.md).
    routine_batch_pause: Duration = Field(
        0.004,
        ge=0,
        le=10,
        description="pause between two delete batches of one run, so writers get the database "
        "back (0: back to back; at most 10s)",
    )
    metrics_port: int = Field(
        0, ge=0, le=65535, description="serve Prometheus metrics on this port (0: off)"
    )
    routine_max_backoff: Duration = Field(
        30.0, gt=0, description="longest wait between ticks while the database is failing"
    )
