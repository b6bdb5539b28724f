"""The whole suite as real processes (as ./scripts/run starts it), the tester at short delays."""

import asyncio
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from tester.audit import Audit, audit
from tests.support.suite import Suite
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e

FAST_TESTER = {
    "TESTER_INTERVAL": "200ms",
    "TESTER_DELAY_MIN": "5ms",
    "TESTER_DELAY_MAX": "60ms",
    "TESTER_ID_RANGE": "1000",
    "ROUTINE_INTERVAL": "500ms",
}


@pytest.fixture
def suite(service_env: dict[str, str], tmp_path: Path) -> Iterator[Suite]:
    running = Suite.create(service_env, tmp_path / "suite")
    yield running
    running.stop_all()


async def stored(pool: asyncpg.Pool) -> dict[int, datetime]:
    return dict(await pool.fetch("SELECT id, last_seen FROM object"))


async def test_every_online_id_sent_is_stored_and_no_offline_one(
    suite: Suite, db_pool: asyncpg.Pool
) -> None:
    suite.env.update(FAST_TESTER, TESTER_CALLBACKS="25", OBJECT_TTL="1h")
    suite.start_all()
    suite.wait_for_callbacks(25, timeout=30)
    records = suite.ledger()
    assert len(records) == 25
    assert sum(len(r["object_ids"]) for r in records) > 0

    last: list[Audit] = []

    async def settled() -> Audit | None:
        last[:] = [audit(records, await stored(db_pool))]
        return last[0] if last[0].clean else None

    try:
        result = await eventually(settled, timeout=30, interval=0.2, what="ledger audit")
    except AssertionError as error:
        raise AssertionError(f"{error}; last audit: {last}") from None
    assert result.online_expected > 0
    assert result.failures == []
    for process in suite.processes.values():
        assert "Traceback" not in process.output()


async def test_rows_older_than_the_ttl_disappear(suite: Suite, db_pool: asyncpg.Pool) -> None:
    ttl, interval, margin = 2.0, 0.5, 1.5
    suite.env.update(FAST_TESTER, OBJECT_TTL=f"{ttl}s")
    suite.start_all()

    async def some_rows() -> bool:
        return bool(await stored(db_pool))

    await eventually(some_rows, timeout=20, what="rows stored")
    # While callbacks flow, no row is ever older than TTL + interval (+ margin).
    deadline = time.monotonic() + 6
    oldest = timedelta(0)
    while time.monotonic() < deadline:
        age = await db_pool.fetchval("SELECT max(now() - last_seen) FROM object")
        oldest = max(oldest, age or timedelta(0))
        await asyncio.sleep(0.1)  # a sampling period, not a wait for work
    assert oldest <= timedelta(seconds=ttl + interval + margin)

    suite.tester("POST", "/control", json={"paused": True})
    paused_at = time.monotonic()

    async def empty() -> bool:
        return not await stored(db_pool)

    await eventually(empty, timeout=ttl + interval + margin + 5, interval=0.1, what="all expired")
    # Rows stop being refreshed when the last in-flight callback is processed (< 1 s after pause).
    assert time.monotonic() - paused_at <= ttl + interval + margin + 1.0
