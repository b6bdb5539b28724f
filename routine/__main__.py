"""``python -m routine``"""

from __future__ import annotations

import asyncio
import signal
import sys

import structlog
import uvloop

from common.db import create_pool, migrate
from common.heartbeat import beat_forever
from common.log import configure_logging
from common.metrics import ProbeServer, service_registry
from common.probes import DatabaseProbe
from common.retrying import DependencyUnavailable
from common.settings import load_settings
from routine.expiry import run_routine
from routine.metrics import RoutineMetrics
from routine.settings import RoutineSettings

log = structlog.get_logger("routine")


async def main(settings: RoutineSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    pool = await create_pool(
        settings.postgres_dsn,
        max_size=settings.postgres_pool_size,
        deadline=settings.startup_timeout,
    )
    heartbeat = asyncio.create_task(beat_forever())
    try:
        await migrate(pool)
        log.info(
            "routine_started",
            interval_s=settings.routine_interval,
            ttl_s=settings.object_ttl,
            batch_size=settings.routine_batch_size,
        )
        registry = service_registry()
        metrics = RoutineMetrics(registry, settings.object_ttl)
        database = DatabaseProbe(pool)
        probes = ProbeServer(registry, {"database": lambda: database.ok}, service="routine")
        async with probes.serving(settings.metrics_port):
            probing = asyncio.create_task(database.run())
            try:
                await run_routine(pool, settings, stop, metrics)
            finally:
                probing.cancel()
    finally:
        heartbeat.cancel()
        await pool.close()
    log.info("routine_stopped")


def run() -> None:
    settings = load_settings(RoutineSettings, "routine")
    configure_logging("routine", settings.log_level, settings.log_format)
    try:
        uvloop.run(main(settings))
    except DependencyUnavailable as error:
        log.error("dependency_unavailable", error=str(error))
        sys.exit(1)


if __name__ == "__main__":
    run()
