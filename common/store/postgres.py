"""The ``object`` table as an :class:`~common.store.ObjectStore`: today's ``unnest`` upsert
(:func:`common.db.upsert_last_seen`), unchanged; the schema and the routine stay in
:mod:`common.db`."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING

from common.db import DATABASE_ERRORS, Executor, migrate, open_pool, upsert_last_seen

if TYPE_CHECKING:
    from common.settings import PostgresSettings


class PostgresStore:
    name = "postgresql"
    errors = DATABASE_ERRORS

    def __init__(self, db: Executor) -> None:
        self.db = db
        self.overwritten = 0

    @classmethod
    async def open(cls, settings: PostgresSettings) -> PostgresStore:
        """The pool from ``POSTGRES_*``, schema migrated."""
        pool = await open_pool(settings)
        try:
            await migrate(pool)
        except BaseException:
            await pool.close()
            raise
        return cls(pool)

    async def write(self, latest: Mapping[int, datetime]) -> int:
        return await upsert_last_seen(self.db, latest)

    async def ping(self) -> None:
        await self.db.fetchval("SELECT 1")

    async def count(self) -> int:
        return int(await self.db.fetchval("SELECT count(*) FROM object"))

    async def read(self, object_id: int) -> datetime | None:
        seen: datetime | None = await self.db.fetchval(
            "SELECT last_seen FROM object WHERE id = $1", object_id
        )
        return seen

    async def close(self) -> None:
        await self.db.close()
