"""Reach into a real spool file the way a full disk or another process would."""

from __future__ import annotations

from producer.spool import Spool


async def on_spool_thread(spool: Spool, statement: str) -> list[tuple[object, ...]]:
    return await spool._run(lambda: spool._live().execute(statement).fetchall())


async def fill_disk(spool: Spool) -> None:
    """Make every further write fail with SQLITE_FULL, as on a full disk."""
    [(pages,)] = await on_spool_thread(spool, "PRAGMA page_count")
    await on_spool_thread(spool, f"PRAGMA max_page_count = {pages}")
