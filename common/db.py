"""PostgreSQL: the pool, the schema, and the two statements the suite lives on.

* :func:`upsert_last_seen` — one ``unnest`` upsert per batch; ``last_seen`` only moves forward.
* :func:`expire_stale` — delete rows not seen for a TTL, in bounded batches, by the database clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import re
import ssl as ssl_module
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, TypeAlias

import asyncpg
import structlog

from common.retrying import DependencyUnavailable, retry_connect
from common.tls import certificate_refused, describe_refusal

if TYPE_CHECKING:
    from common.settings import PostgresSettings

log = structlog.get_logger(__name__)

# Advisory lock keys (bigint). Fixed numbers, so every process and version agrees on them.
MIGRATION_LOCK_KEY = 0x6C61_7374_0001  # "last" + 1
EXPIRY_LOCK_KEY = 0x6C61_7374_0002

# What a lost, refused or killed database connection raises. InternalClientError: asyncpg's
# "cannot switch to state …" when a session is terminated (pg_terminate_backend) mid-statement
# and the connection goes back to the pool. Anything else is a bug and propagates.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)

_MIGRATION_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

UPSERT_SQL = """
INSERT INTO object (id, last_seen)
SELECT * FROM unnest($1::bigint[], $2::timestamptz[])
ON CONFLICT (id) DO UPDATE
    SET last_seen = GREATEST(object.last_seen, EXCLUDED.last_seen)
    WHERE object.last_seen < EXCLUDED.last_seen
"""

# SKIP LOCKED: a row an upsert is refreshing right now is simply left for the next batch (and
# the routine never waits for, or deadlocks with, a writer).
#
# The batch goes to the DELETE as an array (``id = ANY (ARRAY(…))``), not as a CTE joined on id:
# asyncpg prepares the statement, and from its sixth run on PostgreSQL uses a generic plan, in which
# ``LIMIT $2`` is unknown. For the CTE form that plan hash-joined the batch with *every* stale row
# (an index scan of all of them, spilling to temp files): 116 ms per batch of 5,000 with 490,000
# stale rows left, against 9 ms for the custom plan, so deleting 1,000,000 rows took ~20 s of a
# busy core (EXPLAIN ANALYZE, docs/benchmarks/NOTES.md). The array form has one plan, generic or
# not: the batch's ids from the last_seen index, then a primary-key lookup of each (7 ms).
EXPIRE_SQL = """
DELETE FROM object
WHERE id = ANY (ARRAY(
        SELECT id FROM object
        WHERE last_seen < now() - make_interval(secs => $1)
        ORDER BY last_seen
        LIMIT $2
        FOR UPDATE SKIP LOCKED))
    AND last_seen < now() - make_interval(secs => $1)
"""


Executor: TypeAlias = asyncpg.Pool | asyncpg.Connection


async def create_pool(
    dsn: str,
    *,
    max_size: int = 10,
    min_size: int = 1,
    deadline: float = 120.0,
    ssl: ssl_module.SSLContext | str | None = None,
) -> asyncpg.Pool:
    """Open a pool, retrying with backoff for up to ``deadline`` seconds.

    Once open, the pool replaces broken connections on the next acquire, so a database restart
    costs the statements that were running, not the pool. ``ssl`` is asyncpg's (see
    :func:`common.tls.postgres_ssl`); a refused server certificate is not retried.
    """

    async def attempt() -> asyncpg.Pool:
        try:
            return await asyncpg.create_pool(
                dsn,
                min_size=min(min_size, max_size),
                max_size=max_size,
                timeout=10,
                command_timeout=60,
                ssl=ssl,
            )
        except OSError as error:
            refused = certificate_refused(error)
            if refused is not None:
                raise DependencyUnavailable(
                    describe_refusal(
                        "postgresql",
                        refused,
                        "check POSTGRES_SSLROOTCERT and that POSTGRES_HOST is in the server's "
                        "certificate",
                    )
                ) from error
            raise

    try:
        return await retry_connect(
            "postgresql",
            attempt,
            deadline=deadline,
            retry_on=(
                OSError,
                ConnectionError,
                TimeoutError,
                asyncpg.CannotConnectNowError,
                asyncpg.TooManyConnectionsError,
                # several hosts, none accepting writes yet (a standby being promoted)
                asyncpg.TargetServerAttributeNotMatched,
            ),
        )
    except (
        asyncpg.InvalidAuthorizationSpecificationError,
        asyncpg.InvalidCatalogNameError,
    ) as error:
        # Retrying a wrong password or a missing database helps no one: say which setting.
        raise DependencyUnavailable(
            f"postgresql refused the connection: {error} "
            "(check POSTGRES_USER, POSTGRES_PASSWORD and POSTGRES_DB)"
        ) from error


async def open_pool(settings: PostgresSettings) -> asyncpg.Pool:
    """The service's pool, from its ``POSTGRES_*`` settings (hosts, TLS, size, deadline)."""
    return await create_pool(
        settings.postgres_dsn,
        max_size=settings.postgres_pool_size,
        deadline=settings.startup_timeout,
        ssl=settings.postgres_ssl(),
    )


def migrations() -> list[tuple[int, str, str]]:
    """The bundled migrations as ``(version, name, sql)``, in order."""
    found = []
    for entry in importlib.resources.files("common.migrations").iterdir():
        match = _MIGRATION_FILE.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


async def migrate(pool: Executor) -> list[int]:
    """Apply pending migrations under an advisory lock; return the versions applied here.

    Idempotent and safe to run from every process at once: the first to take the lock applies
    what is missing, the others wait for it and then find nothing left to do.
    """
    async with _connection(pool) as connection, connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
        await connection.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    INTEGER PRIMARY KEY,
                   name       TEXT NOT NULL,
                   applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"""
        )
        done = {
            row["version"]
            for row in await connection.fetch("SELECT version FROM schema_migrations")
        }
        applied = []
        for version, name, sql in migrations():
            if version in done:
                continue
            await connection.execute(sql)
            await connection.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
            )
            applied.append(version)
    if applied:
        log.info("schema_migrated", applied=applied)
    return applied


def merge_observations(observations: Iterable[tuple[int, datetime]]) -> dict[int, datetime]:
    """Collapse repeated ids, keeping the latest time for each (Postgres refuses one key twice
    in one ``INSERT … ON CONFLICT``)."""
    latest: dict[int, datetime] = {}
    for object_id, seen in observations:
        previous = latest.get(object_id)
        if previous is None or seen > previous:
            latest[object_id] = seen
    return latest


async def upsert_last_seen(db: Executor, latest: Mapping[int, datetime]) -> int:
    """Store ``latest`` (id → time seen online) in one statement; return rows written.

    A row only moves forward in time: an older or equal observation (a redelivery, a late retry)
    writes nothing, not even a dead tuple. Ids are sent sorted so that two writers touching the
    same ids lock them in the same order and cannot deadlock.
    """
    if not latest:
        return 0
    ids = sorted(latest)
    status = await db.execute(UPSERT_SQL, ids, [latest[i] for i in ids])
    return int(status.rsplit(" ", 1)[-1])


async def expire_stale(
    db: Executor,
    ttl_seconds: float,
    batch_size: int,
    *,
    pause: float = 0.0,
    stop: asyncio.Event | None = None,
) -> tuple[int, int]:
    """Delete rows whose ``last_seen`` is older than ``ttl_seconds`` by the database clock, at
    most ``batch_size`` per statement, until none is left. Returns ``(deleted, batches)``.

    ``pause`` seconds pass between two batches (never after the last one), so that the writers
    get the disk and the CPU back between deletes. Once ``stop`` is set, no further batch starts
    (the rows left wait for the next tick, of this process or of another replica).
    """
    deleted = batches = 0
    while True:
        status = await db.execute(EXPIRE_SQL, float(ttl_seconds), batch_size)
        count = int(status.rsplit(" ", 1)[-1])
        batches += 1
        deleted += count
        if count < batch_size or await _stopped_after(pause, stop):
            return deleted, batches


async def _stopped_after(seconds: float, stop: asyncio.Event | None) -> bool:
    """Wait ``seconds``, less if ``stop`` is set meanwhile; return whether it is."""
    if stop is None:
        if seconds > 0:
            await asyncio.sleep(seconds)
        return False
    if seconds > 0 and not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=seconds)
    return stop.is_set()


@asynccontextmanager
async def _connection(db: Executor) -> AsyncIterator[asyncpg.Connection]:
    """Acquire from a pool, or use a connection as it is."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as connection:
            yield connection
    else:
        yield db
