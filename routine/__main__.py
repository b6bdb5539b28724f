"""``python -m routine``"""

from __future__ import annotations

import asyncio

import structlog
from prometheus_client import CollectorRegistry

from common.db import create_pool, migrate
from common.entrypoint import run_service
from common.heartbeat import beat_forever
from common.metrics import serve_metrics
from routine.expiry import run_routine
from routine.metrics import RoutineMetrics
from routine.settings import RoutineSettings

log = structlog.get_logger("routine")


async def main(settings: RoutineSettings, stop: asyncio.Event) -> None:
    pool = await create_pool(
        settings.postgres_dsn,
        max_size=settings.postgres_pool_size,
        deadline=settings.startup_timeout,
        ssl=settings.postgres_ssl(),
    )
    try:
        async with asyncio.TaskGroup() as tasks:
            heartbeat = tasks.create_task(beat_forever())
            await migrate(pool)
            log.info(
                "routine_started",
                interval_s=settings.routine_interval,
                ttl_s=settings.object_ttl,
                batch_size=settings.routine_batch_size,
            )
            registry = CollectorRegistry()
            metrics = RoutineMetrics(registry)
            serve_metrics(registry, settings.metrics_port)
            await run_routine(pool, settings, stop, metrics)
            heartbeat.cancel()
    finally:
        await pool.close()
    log.info("routine_stopped")


def run() -> None:
    run_service("routine", RoutineSettings, main)


if __name__ == "__main__":
    run()
