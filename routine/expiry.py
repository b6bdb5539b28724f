"""One expiry run, and the loop that schedules runs."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass

import asyncpg
import structlog

from common.backoff import backoff_delay
from common.db import DATABASE_ERRORS, EXPIRY_LOCK_KEY, expire_stale
from routine.metrics import RoutineMetrics
from routine.settings import RoutineSettings

log = structlog.get_logger(__name__)


# Right after a tick this should be 0: rows refreshed or stale since the delete began. Uses the
# last_seen index, like the delete.
COUNT_STALE_SQL = "SELECT count(*) FROM object WHERE last_seen < now() - make_interval(secs => $1)"


@dataclass(frozen=True)
class TickResult:
    ran: bool  # False: another routine held the lock
    deleted: int = 0
    batches: int = 0


async def expire_once(
    pool: asyncpg.Pool,
    ttl_seconds: float,
    batch_size: int,
    *,
    pause: float = 0.0,
    stop: asyncio.Event | None = None,
) -> TickResult:
    """Delete stale rows unless another routine is already doing it.

    ``pg_try_advisory_lock`` makes replicas harmless: the one that gets the lock works, the others
    skip this tick. The lock is per session and is released before the connection goes back to
    the pool (or by the server, if the connection dies). It is held through the pauses between
    batches, so a replica never starts deleting while another is only pausing.
    """
    async with pool.acquire() as connection:
        if not await connection.fetchval("SELECT pg_try_advisory_lock($1)", EXPIRY_LOCK_KEY):
            return TickResult(ran=False)
        try:
            deleted, batches = await expire_stale(
                connection, ttl_seconds, batch_size, pause=pause, stop=stop
            )
        finally:
            await connection.execute("SELECT pg_advisory_unlock($1)", EXPIRY_LOCK_KEY)
    return TickResult(ran=True, deleted=deleted, batches=batches)


def next_delay(
    interval: float, failures: int, max_backoff: float, rng: random.Random | None = None
) -> float:
    """Seconds to wait before the next tick: the interval, or after failures the backoff from the
    interval up, jittered like every other retry so that replicas which failed together (a
    database restart) do not come back in lockstep."""
    return interval if failures == 0 else backoff_delay(failures, interval, max_backoff, rng)


async def run_routine(
    pool: asyncpg.Pool, settings: RoutineSettings, stop: asyncio.Event, metrics: RoutineMetrics
) -> None:
    """Tick every ``ROUTINE_INTERVAL`` until ``stop`` is set; never exit on a database error."""
    failures = 0
    first = True
    while not stop.is_set():
        started = time.perf_counter()
        try:
            result = await expire_once(
                pool,
                settings.object_ttl,
                settings.routine_batch_size,
                pause=settings.routine_batch_pause,
                stop=stop,
            )
        except DATABASE_ERRORS as error:
            failures += 1
            metrics.ticks.labels("failed").inc()
            log.warning("expiry_failed", error=repr(error), consecutive_failures=failures)
        else:
            # A tick that deleted nothing is news only as the first one or the first after a
            # failure; otherwise it would print a line every ROUTINE_INTERVAL forever.
            newsworthy = first or failures > 0 or result.deleted > 0
            failures, first = 0, False
            metrics.ticks.labels("ran" if result.ran else "skipped").inc()
            metrics.deleted.inc(result.deleted)
            metrics.duration.observe(time.perf_counter() - started)
            if result.ran:
                await _count_behind(pool, settings.object_ttl, metrics)
            (log.info if newsworthy else log.debug)(
                "expiry_tick" if result.ran else "expiry_skipped_locked",
                deleted=result.deleted,
                batches=result.batches,
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
            )
        elapsed = time.perf_counter() - started
        delay = next_delay(settings.routine_interval, failures, settings.routine_max_backoff)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=max(0.0, delay - elapsed))


async def _count_behind(pool: asyncpg.Pool, ttl_seconds: float, metrics: RoutineMetrics) -> None:
    try:
        behind = await pool.fetchval(COUNT_STALE_SQL, float(ttl_seconds))
    except DATABASE_ERRORS as error:
        log.warning("rows_behind_unknown", error=repr(error))
        return
    metrics.rows_behind.set(behind)
