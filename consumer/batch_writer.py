"""Micro-batched writes: rows from many messages, one store write per flush (one ``unnest``
statement on PostgreSQL, pipelined script calls on Redis).

A flush happens at ``max_rows`` rows or ``max_delay`` after the first row of a batch, whichever
comes first. Only after the store acknowledged the write are the rows' owners told (the listener's
``on_stored``), so a message is never acked before its rows are durable. When the store fails,
the batch is kept and retried with backoff, and ``on_health(False)`` asks the listener (the
worker) to stop taking new work.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from typing import Generic, Protocol, TypeVar

import structlog

from common.backoff import backoff_delay
from common.db import merge_observations
from common.store import ObjectStore

log = structlog.get_logger(__name__)

O = TypeVar("O")  # noqa: E741 - the owner of a row
O_contra = TypeVar("O_contra", contravariant=True)


class RowSink(Protocol[O_contra]):
    """Where online answers go: ``owner`` is told once the row is committed."""

    def add(self, object_id: int, seen: datetime, owner: O_contra) -> None: ...


class CommitListener(Protocol[O]):
    """Who hears what the writer committed, and whether the database can be written."""

    def on_stored(self, owners: list[O]) -> None:
        """These rows' owners (one entry per row) are durable."""

    def on_health(self, healthy: bool) -> None:
        """False at a failing flush, True when a flush succeeds again."""


class Batch(Generic[O]):
    """Rows waiting for one statement: parallel lists, so a row costs three appends."""

    __slots__ = ("ids", "owners", "seen")

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.seen: list[datetime] = []
        self.owners: list[O] = []

    def __len__(self) -> int:
        return len(self.ids)

    def latest(self) -> dict[int, datetime]:
        return merge_observations(zip(self.ids, self.seen, strict=True))

    def absorb(self, newer: Batch[O]) -> None:
        self.ids += newer.ids
        self.seen += newer.seen
        self.owners += newer.owners


class BatchWriter(Generic[O]):
    def __init__(
        self,
        store: ObjectStore,
        *,
        max_rows: int,
        max_delay: float,
        max_backoff: float = 5.0,
        statement_timeout: float = 15.0,
        on_flush: Callable[[float, int], None] = lambda seconds, rows: None,
    ) -> None:
        self._store = store
        self._max_rows = max_rows
        self._max_delay = max_delay
        self._max_backoff = max_backoff
        self._statement_timeout = statement_timeout
        self._on_flush = on_flush
        self._batch: Batch[O] = Batch()
        self._first_row_at = 0.0
        self._wake = asyncio.Event()
        self._closing = False
        self._give_up_at: float | None = None
        self.rows_written = 0
        self.flushes = 0

    def add(self, object_id: int, seen: datetime, owner: O) -> None:
        batch = self._batch
        if not batch.ids:
            self._first_row_at = time.monotonic()
            self._wake.set()
        batch.ids.append(object_id)
        batch.seen.append(seen)
        batch.owners.append(owner)
        if len(batch.ids) == self._max_rows:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._batch)

    async def run(self, listener: CommitListener[O]) -> None:
        """Flush until :meth:`close` is called and nothing is left (or until the close's
        deadline passes: what is unflushed then stays unacked), telling ``listener``."""
        while True:
            if not self._batch.ids:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            due = self._first_row_at + self._max_delay
            while len(self._batch) < self._max_rows and not self._closing:
                remaining = due - time.monotonic()
                if remaining <= 0:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), remaining)
                except TimeoutError:
                    break
            batch, self._batch = self._batch, Batch()
            if not await self._commit(batch, listener):
                return

    def close(self, deadline: float | None = None) -> None:
        """Flush what is pending now, then let :meth:`run` return; while the database fails,
        give up retrying at ``deadline`` (monotonic seconds)."""
        self._closing = True
        self._give_up_at = deadline
        self._wake.set()

    async def _commit(self, batch: Batch[O], listener: CommitListener[O]) -> bool:
        failures = 0
        healthy = True
        while True:
            started = time.perf_counter()
            try:
                # A black-holed connection would otherwise hang here for the pool's command
                # timeout; the batch is retried either way.
                async with asyncio.timeout(self._statement_timeout):
                    written = await self._store.write(batch.latest())
                break
            except self._store.errors as error:
                if healthy:
                    healthy = False
                    listener.on_health(False)
                limit = self._give_up_at
                failures += 1
                wait = backoff_delay(failures, 0.1, self._max_backoff)
                log.warning(
                    "flush_failed", rows=len(batch), error=repr(error), retry_in_s=round(wait, 2)
                )
                if limit is not None and time.monotonic() + wait > limit:
                    log.error("flush_abandoned", rows=len(batch), reason="shutdown deadline")
                    return False
                await asyncio.sleep(wait)
                # Rows that arrived meanwhile ride along: still one statement, fewer flushes.
                batch.absorb(self._batch)
                self._batch = Batch()
        self._on_flush(time.perf_counter() - started, len(batch))
        self.rows_written += written
        self.flushes += 1
        if not healthy:
            log.info("flush_recovered", rows=len(batch))
            listener.on_health(True)
        listener.on_stored(batch.owners)
        return True
