"""The local durable spool: work messages the broker has not confirmed yet, in SQLite.

WAL mode with ``synchronous=FULL``: a committed append survives a crash of the process or the
machine. Every SQLite call runs on one dedicated thread, never on the event loop (a commit is an
fsync: about 0.2 ms here, but unbounded on a busy disk). Appends that arrive while a commit is in
progress are committed together in the next transaction (group commit), so a burst of spooled
callbacks costs one fsync per batch, not one per callback.

:meth:`Spool.opened` owns the file for its whole life (open, then close on the way out). The relay
learns that there is something to send from the spool itself: :meth:`Spool.wait_appended`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, TypeVar

import structlog

from common.messages import OutgoingMessage

# Defined with the view HTTP code sees; re-exported for the relay and the entry point.
from producer.view import SpoolUnavailable as SpoolUnavailable

T = TypeVar("T")
log = structlog.get_logger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spooled_message (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- arrival order; AUTOINCREMENT never reuses a number
    message_id TEXT NOT NULL,
    body BLOB NOT NULL,
    spooled_at REAL NOT NULL
)
"""


_NO_PAGE_LIMIT = 4_294_967_294  # SQLite's largest max_page_count


@dataclass(frozen=True, slots=True)
class SpooledMessage:
    seq: int
    message: OutgoingMessage


class _PendingAppend(NamedTuple):
    messages: Sequence[OutgoingMessage]
    callback_id: str
    done: asyncio.Future[None]


class Spool:
    """Open with :meth:`opened` (or :meth:`open` and :meth:`close`); every method is safe to call
    concurrently from the event loop."""

    def __init__(self, path: Path, executor: ThreadPoolExecutor) -> None:
        self.path = path
        self._executor = executor
        self._connection: sqlite3.Connection | None = None
        self._pending: list[_PendingAppend] = []
        self._flusher: asyncio.Task[None] | None = None
        self._depth = 0
        self._writable = True
        self._appended = asyncio.Event()

    @classmethod
    @contextlib.asynccontextmanager
    async def opened(cls, path: Path) -> AsyncIterator[Spool]:
        """The spool at ``path`` (:meth:`open`), closed on the way out."""
        spool = await cls.open(path)
        try:
            yield spool
        finally:
            await spool.close()

    @classmethod
    async def open(cls, path: Path) -> Spool:
        """Open (creating it and its directory if needed) the spool at ``path``."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")
        spool = cls(path, executor)
        try:
            spool._depth = await spool._run(spool._open_sync)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        if spool._depth:
            spool._appended.set()
        log.info("spool_opened", path=str(path), depth=spool._depth)
        return spool

    @property
    def depth(self) -> int:
        """Messages stored and not yet deleted."""
        return self._depth

    @property
    def writable(self) -> bool:
        """False after a failed commit, until one succeeds again."""
        return self._writable

    async def wait_appended(self) -> None:
        """Return once messages were committed after the last :meth:`oldest` began (at once if
        they were): the relay's signal that there is something to send."""
        await self._appended.wait()

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        if self._connection is not None:
            await self._run(self._connection.close)
            self._connection = None
        self._executor.shutdown(wait=True)

    async def append(self, messages: Sequence[OutgoingMessage], callback_id: str) -> None:
        """Store callback ``callback_id``'s ``messages`` durably; return once they are committed.

        Raises :class:`SpoolUnavailable` if the commit failed (nothing of this call is stored).
        """
        if not messages:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(_PendingAppend(messages, callback_id, done))
        if self._flusher is None or self._flusher.done():
            # In a context of its own: the flusher commits a group, and what it logs must not
            # carry the context (the callback_id) of whichever caller happened to start it.
            self._flusher = asyncio.create_task(
                self._flush(), name="spool-flush", context=contextvars.Context()
            )
        # Shielded: a client that disconnects must not abandon a commit that is under way.
        await asyncio.shield(done)

    async def oldest(self, limit: int) -> list[SpooledMessage]:
        """The ``limit`` oldest spooled messages, oldest first."""
        # Cleared before reading: an append committed after this point sets it again.
        self._appended.clear()
        rows = await self._run(self._oldest_sync, limit)
        return [SpooledMessage(seq, OutgoingMessage(mid, body)) for seq, mid, body in rows]

    async def oldest_age(self) -> float:
        """Seconds since the oldest spooled message was written (0 when the spool is empty)."""
        if not self._depth:
            return 0.0
        spooled_at = await self._run(self._oldest_spooled_at_sync)
        return 0.0 if spooled_at is None else max(0.0, time.time() - spooled_at)

    async def delete(self, seqs: Sequence[int]) -> None:
        """Forget messages the broker has confirmed."""
        if seqs:
            deleted = await self._run(self._delete_sync, list(seqs))
            # Not "self._depth -= await …": that reads depth before the await and would drop the
            # appends committed meanwhile.
            self._depth -= deleted

    async def limit_pages(self, pages: int | None) -> None:
        """Cap the file at ``pages`` database pages (SQLite's ``max_page_count``); ``None`` lifts
        the cap. SQLite never sets it below the file's size now, so ``limit_pages(1)`` freezes the
        file where it is. A write past the cap fails as on a full disk. For tests and failure
        drills: the service itself never sets a cap."""
        cap = _NO_PAGE_LIMIT if pages is None else pages
        await self._run(lambda: self._live().execute(f"PRAGMA max_page_count = {int(cap)}"))

    async def _flush(self) -> None:
        while self._pending:
            group, self._pending = self._pending, []
            rows = [message for append in group for message in append.messages]
            try:
                await self._run(self._append_sync, rows)
            except SpoolUnavailable as error:
                self._writable = False
                # About the group, so it names every callback of it, not one.
                log.error(
                    "spool_write_failed",
                    error=repr(error),
                    messages=len(rows),
                    callbacks=len(group),
                    callback_ids=[append.callback_id for append in group],
                )
                for append in group:
                    if not append.done.done():
                        append.done.set_exception(error)
                continue
            if not self._writable:
                log.info("spool_writable_again", messages=len(rows), callbacks=len(group))
            self._writable = True
            self._depth += len(rows)
            self._appended.set()
            for append in group:
                if not append.done.done():
                    append.done.set_result(None)

    async def _run(self, function: Callable[..., T], *args: object) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)
        except sqlite3.Error as error:
            raise SpoolUnavailable(f"spool {self.path}: {error}") from error

    # --- on the spool thread -------------------------------------------------------------------

    def _open_sync(self) -> int:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, isolation_level=None, timeout=10)
            (mode,) = connection.execute("PRAGMA journal_mode=WAL").fetchone()
            if mode != "wal":
                raise sqlite3.OperationalError(f"WAL mode refused (journal_mode={mode})")
            connection.execute("PRAGMA synchronous=FULL")
            connection.execute(_SCHEMA)
            (depth,) = connection.execute("SELECT count(*) FROM spooled_message").fetchone()
        except OSError as error:
            raise SpoolUnavailable(f"cannot open spool {self.path}: {error}") from error
        self._connection = connection
        return int(depth)

    def _append_sync(self, messages: list[OutgoingMessage]) -> None:
        connection = self._live()
        now = time.time()
        connection.execute("BEGIN IMMEDIATE")
        try:
            connection.executemany(
                "INSERT INTO spooled_message (message_id, body, spooled_at) VALUES (?, ?, ?)",
                [(m.message_id, m.body, now) for m in messages],
            )
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise

    def _oldest_sync(self, limit: int) -> list[tuple[int, str, bytes]]:
        return (
            self._live()
            .execute(
                "SELECT seq, message_id, body FROM spooled_message ORDER BY seq LIMIT ?", (limit,)
            )
            .fetchall()
        )

    def _oldest_spooled_at_sync(self) -> float | None:
        row = (
            self._live()
            .execute("SELECT spooled_at FROM spooled_message ORDER BY seq LIMIT 1")
            .fetchone()
        )
        return None if row is None else float(row[0])

    def _delete_sync(self, seqs: list[int]) -> int:
        connection = self._live()
        connection.execute("BEGIN IMMEDIATE")
        try:
            cursor = connection.executemany(
                "DELETE FROM spooled_message WHERE seq = ?", [(seq,) for seq in seqs]
            )
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        return cursor.rowcount

    def _live(self) -> sqlite3.Connection:
        if self._connection is None:
            raise sqlite3.ProgrammingError("spool is closed")
        return self._connection
