"""``python -m routine``"""

from __future__ import annotations

import asyncio
import sys

import structlog

from common.db import migrate, open_pool
from common.entrypoint import run_service
from common.heartbeat import beat_forever
from common.metrics import ProbeServer, service_registry
from common.probes import DatabaseProbe
from common.settings import load_settings
from common.store.postgres import PostgresStore
from common.store.settings import StoreChoice
from routine.expiry import run_routine
from routine.metrics import RoutineMetrics
from routine.settings import RoutineSettings

log = structlog.get_logger("routine")


async def main(settings: RoutineSettings, stop: asyncio.Event) -> None:
    pool = await open_pool(settings)
    try:
        await migrate(pool)
        log.info(
            "routine_started",
            interval_s=settings.routine_interval,
            ttl_s=settings.object_ttl,
            batch_size=settings.routine_batch_size,
            batch_pause_s=settings.routine_batch_pause,
        )
        registry = service_registry()
        metrics = RoutineMetrics(registry, settings.object_ttl)
        database = DatabaseProbe(PostgresStore(pool).ping)
        probes = ProbeServer(registry, {"database": lambda: database.ok}, service="routine")
        async with probes.serving(settings.metrics_port), asyncio.TaskGroup() as tasks:
            heartbeat = tasks.create_task(beat_forever())
            probing = tasks.create_task(database.run())
            await run_routine(pool, settings, stop, metrics)
            heartbeat.cancel()
            probing.cancel()
    finally:
        await pool.close()
    log.info("routine_stopped")


NOTHING_TO_EXPIRE = (
    "routine: STORE=redis: nothing to do, Redis keys expire by themselves (OBJECT_TTL after "
    "their last_seen)\n"
)


def run() -> None:
    # Before RoutineSettings: a Redis deployment has no POSTGRES_* to validate.
    if load_settings(StoreChoice, "routine").store == "redis":
        sys.stdout.write(NOTHING_TO_EXPIRE)
        raise SystemExit(0)
    run_service("routine", RoutineSettings, main)


if __name__ == "__main__":
    run()
