"""Schema, upsert and expiry on the real PostgreSQL."""

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from common import db
from tests.support.processes import ServiceProcess

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.integration
async def test_migrations_are_idempotent(make_database: Callable[[], str]) -> None:
    pool = await asyncpg.create_pool(make_database(), min_size=1, max_size=2)
    try:
        first = await db.migrate(pool)
        second = await db.migrate(pool)
        assert first == [version for version, _, _ in db.migrations()]
        assert second == []
        columns = dict(
            await pool.fetch(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = 'object'"
            )
        )
        assert columns == {"id": "bigint", "last_seen": "timestamp with time zone"}
        indexes = await pool.fetch("SELECT indexdef FROM pg_indexes WHERE tablename = 'object'")
        assert any("(last_seen)" in row["indexdef"] for row in indexes)
    finally:
        await pool.close()


@pytest.mark.integration
def test_two_processes_migrating_at_once_apply_each_version_once(
    make_database: Callable[[], str], tmp_path: Path
) -> None:
    url = make_database()
    script = (
        "import asyncio, json, sys, asyncpg\n"
        "from common.db import migrate\n"
        "async def main():\n"
        "    connection = await asyncpg.connect(sys.argv[1])\n"
        "    print(json.dumps(await migrate(connection)))\n"
        "asyncio.run(main())\n"
    )
    (tmp_path / "migrate_once.py").write_text(script)
    processes = [ServiceProcess("migrate_once", {}, tmp_path, (url,)).start() for _ in range(4)]
    for process in processes:
        assert process.wait(timeout=30) == 0, process.output()
    outputs = [process.output().strip().splitlines()[-1] for process in processes]
    applied = [version for output in outputs for version in json.loads(output)]
    assert sorted(applied) == [version for version, _, _ in db.migrations()]

    async def recorded() -> list[int]:
        connection = await asyncpg.connect(url)
        try:
            rows = await connection.fetch("SELECT version FROM schema_migrations ORDER BY 1")
            return [row["version"] for row in rows]
        finally:
            await connection.close()

    assert asyncio.run(recorded()) == sorted(applied)


@pytest.mark.integration
async def test_upgrades_the_original_go_schema_in_place(make_database: Callable[[], str]) -> None:
    connection = await asyncpg.connect(make_database())
    try:
        await connection.execute(
            "CREATE TABLE object (id INTEGER PRIMARY KEY, last_seen TIMESTAMP NOT NULL);"
            "CREATE INDEX ON object (last_seen);"
            "INSERT INTO object VALUES (7, now());"
        )
        await db.migrate(connection)
        columns = dict(
            await connection.fetch(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = 'object'"
            )
        )
        assert columns == {"id": "bigint", "last_seen": "timestamp with time zone"}
        assert await connection.fetchval("SELECT id FROM object") == 7
        assert await connection.fetchval(
            "SELECT now() - last_seen < interval '1 minute' FROM object"
        )
    finally:
        await connection.close()


@pytest.mark.integration
async def test_upsert_only_moves_last_seen_forward(db_pool: asyncpg.Pool) -> None:
    assert await db.upsert_last_seen(db_pool, {1: NOW, 2: NOW}) == 2
    # older and equal observations write nothing
    assert await db.upsert_last_seen(db_pool, {1: NOW - timedelta(seconds=5), 2: NOW}) == 0
    assert await db.upsert_last_seen(db_pool, {2: NOW + timedelta(seconds=1), 3: NOW}) == 2
    rows = dict(await db_pool.fetch("SELECT id, last_seen FROM object"))
    assert rows == {1: NOW, 2: NOW + timedelta(seconds=1), 3: NOW}


@pytest.mark.integration
async def test_a_batch_with_repeated_ids_is_accepted(db_pool: asyncpg.Pool) -> None:
    batch = db.merge_observations(
        [(5, NOW), (5, NOW + timedelta(seconds=2)), (6, NOW), (5, NOW + timedelta(seconds=1))]
    )
    assert await db.upsert_last_seen(db_pool, batch) == 2
    assert await db_pool.fetchval("SELECT last_seen FROM object WHERE id = 5") == NOW + timedelta(
        seconds=2
    )


@pytest.mark.integration
async def test_concurrent_overlapping_upserts_do_not_deadlock(db_pool: asyncpg.Pool) -> None:
    ids = list(range(2000))
    batches = [
        {i: NOW + timedelta(milliseconds=k) for i in (ids if k % 2 else reversed(ids))}
        for k in range(8)
    ]
    await asyncio.gather(*(db.upsert_last_seen(db_pool, batch) for batch in batches))
    latest = NOW + timedelta(milliseconds=7)
    assert (
        await db_pool.fetchval("SELECT count(*) FROM object WHERE last_seen = $1", latest) == 2000
    )


@pytest.mark.integration
async def test_expire_deletes_only_stale_rows_in_batches(db_pool: asyncpg.Pool) -> None:
    await db_pool.execute(
        "INSERT INTO object SELECT g, now() - interval '31 seconds' FROM generate_series(1, 10) g;"
        "INSERT INTO object SELECT g, now() - interval '29 seconds' FROM generate_series(11, 15) g;"
    )
    deleted, batches = await db.expire_stale(db_pool, 30, batch_size=3)
    assert (deleted, batches) == (10, 4)
    remaining = [row["id"] for row in await db_pool.fetch("SELECT id FROM object ORDER BY id")]
    assert remaining == list(range(11, 16))


def _plan_nodes(plan: dict[str, object]) -> list[str]:
    children = plan.get("Plans", [])
    assert isinstance(children, list)
    return [str(plan["Node Type"]), *(node for child in children for node in _plan_nodes(child))]


@pytest.mark.integration
async def test_the_expiry_statement_stays_an_index_scan_as_a_generic_plan(
    db_pool: asyncpg.Pool,
) -> None:
    """asyncpg prepares the statement and PostgreSQL plans it generically from its sixth run,
    with the LIMIT unknown: that plan must still fetch one batch by index, not hash-join the
    batch with every stale row (the first form of the statement did: 116 ms per batch of 5,000
    instead of 7 with a million stale rows)."""
    await db_pool.execute(
        "INSERT INTO object SELECT g, now() - interval '1 day' FROM generate_series(1, 50000) g"
    )
    await db_pool.execute("ANALYZE object")
    async with db_pool.acquire() as connection, connection.transaction():
        await connection.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        await connection.execute(f"PREPARE expire_generic (float8, int) AS {db.EXPIRE_SQL}")
        try:
            explained = await connection.fetchval(
                "EXPLAIN (FORMAT JSON) EXECUTE expire_generic (30, 5000)"
            )
        finally:
            await connection.execute("DEALLOCATE expire_generic")
    nodes = _plan_nodes(json.loads(explained)[0]["Plan"])
    assert not {"Hash Join", "Hash", "Merge Join", "Seq Scan", "Sort"} & set(nodes), nodes
    assert nodes.count("Index Scan") == 2, nodes  # the batch by last_seen, then each row by id
