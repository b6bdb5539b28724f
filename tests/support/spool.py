"""Look at a real spool file the way a full disk or another process would."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from producer.spool import Spool


async def fill_disk(spool: Spool) -> None:
    """Make every further write fail with SQLITE_FULL, as on a full disk."""
    await spool.limit_pages(1)


def rows_in_file(path: Path, query: str = "SELECT count(*) FROM spooled_message") -> object:
    """One value read from the spool file by a connection of its own, as another process would."""
    with contextlib.closing(sqlite3.connect(path)) as connection:
        return connection.execute(query).fetchone()[0]
