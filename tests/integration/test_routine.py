"""The routine on the real PostgreSQL: what it deletes, with replicas, across an outage."""

import asyncio
import json
import re
import signal
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
import structlog.testing
from prometheus_client import CollectorRegistry

from common.db import EXPIRY_LOCK_KEY
from routine.expiry import expire_once, run_routine
from routine.metrics import RoutineMetrics
from routine.settings import RoutineSettings
from tests.support.database import postgres_env
from tests.support.ports import free_port
from tests.support.processes import ServiceProcess
from tests.support.proxy import TcpProxy
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration


async def insert_rows(pool: asyncpg.Pool, ids: range, age_seconds: float) -> None:
    await pool.execute(
        "INSERT INTO object SELECT g, now() - make_interval(secs => $3) "
        "FROM generate_series($1::bigint, $2::bigint) g "
        "ON CONFLICT (id) DO UPDATE SET last_seen = EXCLUDED.last_seen",
        ids.start,
        ids.stop - 1,
        age_seconds,
    )


async def stored_ids(pool: asyncpg.Pool) -> set[int]:
    return {row["id"] for row in await pool.fetch("SELECT id FROM object")}


async def test_a_replica_skips_while_another_holds_the_lock(db_pool: asyncpg.Pool) -> None:
    await insert_rows(db_pool, range(1, 6), age_seconds=60)
    async with db_pool.acquire() as holder:
        assert await holder.fetchval("SELECT pg_try_advisory_lock($1)", EXPIRY_LOCK_KEY)
        skipped = await expire_once(db_pool, 30, 100)
        assert not skipped.ran
        assert await stored_ids(db_pool) == set(range(1, 6))
        await holder.execute("SELECT pg_advisory_unlock($1)", EXPIRY_LOCK_KEY)
    done = await expire_once(db_pool, 30, 2)
    assert (done.ran, done.deleted, done.batches) == (True, 5, 3)
    assert await stored_ids(db_pool) == set()


async def test_the_pause_comes_between_batches_with_the_lock_held(db_pool: asyncpg.Pool) -> None:
    """A pause far longer than the test: the tick stops after exactly one batch and waits there,
    holding the lock, until ``stop`` ends the pause. Nothing here depends on how fast it runs."""
    await insert_rows(db_pool, range(1, 3), age_seconds=60)
    # One short batch is also the last one: no pause after it, the tick returns at once.
    alone = await asyncio.wait_for(expire_once(db_pool, 30, 3, pause=3600), timeout=10)
    assert (alone.deleted, alone.batches) == (2, 1)

    await insert_rows(db_pool, range(1, 11), age_seconds=60)
    stop = asyncio.Event()
    tick = asyncio.create_task(expire_once(db_pool, 30, 3, pause=3600, stop=stop))

    async def first_batch_done() -> bool:
        return len(await stored_ids(db_pool)) == 7

    await eventually(first_batch_done, timeout=10, what="the first batch of 3 deleted")
    assert not (await expire_once(db_pool, 30, 3)).ran  # the pausing tick holds the lock
    assert not tick.done()
    stop.set()
    paused = await asyncio.wait_for(tick, timeout=10)
    assert (paused.ran, paused.deleted, paused.batches) == (True, 3, 1)
    assert len(await stored_ids(db_pool)) == 7  # left for the next tick
    done = await expire_once(db_pool, 30, 3, pause=0.001)
    assert (done.deleted, done.batches) == (7, 3)
    assert await stored_ids(db_pool) == set()


async def test_sigterm_ends_a_pause_without_waiting_it_out(
    db_pool: asyncpg.Pool, database_url: str, spawn: Callable[..., ServiceProcess]
) -> None:
    """The routine as a process reads ROUTINE_BATCH_PAUSE: with the longest allowed pause it
    deletes one batch of 7 and pauses; SIGTERM then stops it at once, the rest left stale."""
    await insert_rows(db_pool, range(1, 101), age_seconds=60)
    routine = spawn("routine", routine_env(database_url, ROUTINE_BATCH_PAUSE="10s"))

    async def first_batch_done() -> bool:
        return len(await stored_ids(db_pool)) < 100

    await eventually(first_batch_done, timeout=20, what="the first batch deleted")
    routine.signal(signal.SIGTERM)
    assert routine.wait(timeout=5) == 0
    assert len(await stored_ids(db_pool)) == 93
    ticks = [
        entry
        for entry in map(json.loads, routine.output().splitlines())
        if entry.get("event") == "expiry_tick"
    ]
    assert [(tick["deleted"], tick["batches"]) for tick in ticks] == [(7, 1)]


def routine_env(database_url: str, **extra: str) -> dict[str, str]:
    return {
        **postgres_env(database_url),
        "ROUTINE_INTERVAL": "100ms",
        "OBJECT_TTL": "2s",
        "ROUTINE_BATCH_SIZE": "7",
        "ROUTINE_BATCH_PAUSE": "10ms",
        "STARTUP_TIMEOUT": "20s",
        **extra,
    }


async def test_two_routines_delete_only_stale_rows(
    db_pool: asyncpg.Pool, database_url: str, spawn: Callable[..., ServiceProcess]
) -> None:
    await insert_rows(db_pool, range(1, 101), age_seconds=10)  # stale
    await insert_rows(db_pool, range(101, 151), age_seconds=0)  # fresh
    routines = [spawn("routine", routine_env(database_url)) for _ in range(2)]
    for routine in routines:
        routine.wait_for_log('"routine_started"')

    async def only_fresh_left() -> bool:
        return await stored_ids(db_pool) == set(range(101, 151))

    await eventually(only_fresh_left, timeout=10, what="stale rows deleted")
    # The fresh rows age past the TTL and go too; rows refreshed meanwhile stay.
    await insert_rows(db_pool, range(151, 161), age_seconds=0)
    deadline = time.monotonic() + 30

    async def aged_out() -> bool:
        await insert_rows(db_pool, range(151, 161), age_seconds=0)  # keep these fresh
        return await stored_ids(db_pool) == set(range(151, 161))

    await eventually(aged_out, timeout=deadline - time.monotonic(), interval=0.2)
    logs = "".join(routine.output() for routine in routines)
    assert '"expiry_tick"' in logs
    assert all(routine.running() for routine in routines)
    for routine in routines:
        assert routine.terminate(timeout=10) == 0


async def test_the_routine_survives_a_database_cut(
    db_pool: asyncpg.Pool,
    database_url: str,
    spawn: Callable[..., ServiceProcess],
    make_proxy: Callable[[str, int], TcpProxy],
) -> None:
    parts = urlsplit(database_url)
    proxy = make_proxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    env = routine_env(database_url, POSTGRES_HOST="127.0.0.1", POSTGRES_PORT=str(proxy.port))
    env["ROUTINE_MAX_BACKOFF"] = "500ms"
    metrics_port = free_port()
    env["METRICS_PORT"] = str(metrics_port)
    routine = spawn("routine", env)
    routine.wait_for_log('"routine_started"')

    await insert_rows(db_pool, range(1, 21), age_seconds=10)

    async def emptied() -> bool:
        return not await stored_ids(db_pool)

    await eventually(emptied, timeout=10, what="stale rows deleted before the cut")

    proxy.cut()
    failures_before = routine.output().count('"expiry_failed"')
    routine.wait_ready(
        lambda: routine.output().count('"expiry_failed"') >= failures_before + 2, timeout=15
    )
    await insert_rows(
        db_pool, range(21, 41), age_seconds=10
    )  # written while the routine is cut off
    assert await stored_ids(db_pool) == set(range(21, 41))
    proxy.restore()

    await eventually(emptied, timeout=15, what="stale rows deleted after the cut")
    assert routine.running()
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)).text
    assert "lastseen_routine_deleted_rows_total 40.0" in metrics
    failed = re.search(r'lastseen_routine_ticks_total\{outcome="failed"\} (\d+)', metrics)
    assert failed and int(failed.group(1)) >= 2
    started = time.monotonic()
    routine.signal(signal.SIGTERM)
    assert routine.wait(timeout=10) == 0
    assert time.monotonic() - started < 5
    assert "Traceback" not in routine.output()


def test_the_routine_waits_for_a_database_that_starts_late(
    database_url: str,
    spawn: Callable[..., ServiceProcess],
    make_proxy: Callable[[str, int], TcpProxy],
) -> None:
    parts = urlsplit(database_url)
    proxy = make_proxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    proxy.cut()
    env = routine_env(database_url, POSTGRES_HOST="127.0.0.1", POSTGRES_PORT=str(proxy.port))
    routine = spawn("routine", env)
    routine.wait_for_log('"connect_retry"', timeout=15)
    proxy.restore()
    routine.wait_for_log('"routine_started"', timeout=15)
    assert routine.running()


async def test_only_newsworthy_ticks_log_at_info(db_pool: asyncpg.Pool) -> None:
    """In-process: the first tick and ticks that delete log at info; quiet ticks at debug."""
    settings = RoutineSettings(
        POSTGRES_HOST="127.0.0.1", POSTGRES_DB="postgres", ROUTINE_INTERVAL="20ms"
    )
    stop = asyncio.Event()
    metrics = RoutineMetrics(CollectorRegistry())
    with structlog.testing.capture_logs() as logs:
        routine = asyncio.create_task(run_routine(db_pool, settings, stop, metrics))

        def ticks() -> list[dict[str, object]]:
            return [entry for entry in logs if entry["event"] == "expiry_tick"]

        await eventually(lambda: len(ticks()) >= 3, timeout=10, what="three quiet ticks")
        await insert_rows(db_pool, range(1, 4), age_seconds=60)
        await eventually(
            lambda: any(entry["deleted"] == 3 for entry in ticks()), timeout=10, what="a deletion"
        )
        stop.set()
        await asyncio.wait_for(routine, timeout=5)
    levels = [(entry["log_level"], entry["deleted"]) for entry in ticks()]
    assert levels[0] == ("info", 0)
    assert ("info", 3) in levels
    assert all(level == "debug" for level, deleted in levels[1:] if deleted == 0)
