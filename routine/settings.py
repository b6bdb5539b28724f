from __future__ import annotations

from pydantic import Field

from common.settings import Duration, PostgresSettings


class RoutineSettings(PostgresSettings):
    routine_interval: Duration = Field(3.0, gt=0, description="time between expiry runs")
    object_ttl: Duration = Field(
        30.0, gt=0, description="delete objects whose last_seen is older than this"
    )
    routine_batch_size: int = Field(
        5000, ge=1, le=1_000_000, description="rows deleted per statement (bounds lock time)"
    )
    # 20ms: with a batch of 5,000 taking ~9 ms, deletes still run at ~165,000 rows/s (1,000,000 in
    # 6 s), above one primary's insert rate, while writers get two thirds of the time; see
    # docs/benchmarks/NOTES.md for the measurements at 0, 20, 50 and 100 ms.
    routine_batch_pause: Duration = Field(
        0.02,
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
