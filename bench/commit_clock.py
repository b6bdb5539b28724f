"""When did a row become visible? Commit times read from transaction snapshots, without a trigger.

PostgreSQL keeps no commit time per row (``track_commit_timestamp`` is off on the shared server,
and a benchmark must not reconfigure it); a trigger's ``clock_timestamp()`` runs *inside* the
transaction, before the commit it is meant to time, and would add work to the path being measured.

What PostgreSQL does expose cheaply is visibility itself: ``pg_current_snapshot()`` returns
``xmin:xmax:xip`` — every transaction id below ``xmax`` that is not in the in-progress list
``xip`` has finished. :class:`CommitClock` takes a snapshot every ``interval`` (default 5 ms; one
tiny query, no table read), on its own connection in its own thread and event loop so that the
benchmark's load generator cannot delay it, and notes when each transaction id first appears
finished. After the run, each stored row's ``xmin`` (the id of the transaction that inserted it:
the consumer's batch upsert) maps to the first snapshot that saw it finished. So for every row:

    commit happened in (send time of the previous snapshot, receive time of this snapshot]

and the receive time is used: an upper bound, late by at most one interval plus one round trip
(the width of that bracket is reported, per row, as the resolution). Aborted transactions leave no
rows, so they never need telling apart from committed ones. ``xmin`` is 32 bits and the snapshot's
ids 64: they are compared modulo 2**32, which is exact within a run that uses fewer than two
billion transaction ids.
"""

from __future__ import annotations

import asyncio
import bisect
import threading
import time
from dataclasses import dataclass, field

import asyncpg

XID_MODULO = 2**32


@dataclass
class Snapshot:
    sent: float  # epoch seconds, before the query
    received: float  # epoch seconds, after the answer
    xmax: int
    in_progress: frozenset[int]


@dataclass
class CommitClock:
    interval: float = 0.005
    snapshots: list[Snapshot] = field(default_factory=list)

    def start(self, dsn: str) -> tuple[threading.Thread, threading.Event]:
        """Take snapshots in a thread of its own until the returned event is set; join the
        thread after setting it."""
        stop = threading.Event()
        thread = threading.Thread(
            target=lambda: asyncio.run(self._run(dsn, stop)), name="commit-clock", daemon=True
        )
        thread.start()
        return thread, stop

    async def _run(self, dsn: str, stop: threading.Event) -> None:
        connection = await asyncpg.connect(dsn)
        try:
            await self.run(connection, stop)
        finally:
            await connection.close()

    async def run(self, connection: asyncpg.Connection, stop: threading.Event) -> None:
        """Take snapshots on ``connection`` (dedicated to this) until ``stop`` is set."""
        while not stop.is_set():
            sent = time.time()
            text = await connection.fetchval("SELECT pg_current_snapshot()::text")
            received = time.time()
            _xmin, xmax, xip = text.split(":")
            in_progress = frozenset(int(x) for x in xip.split(",") if x)
            self.snapshots.append(Snapshot(sent, received, int(xmax), in_progress))
            await asyncio.sleep(self.interval)

    def commit_times(self, xmins: set[int]) -> dict[int, tuple[float, float]]:
        """``xmin`` (32-bit) → (earliest, latest) epoch its commit can have happened: the send
        time of the last snapshot that did not see it finished and the receive time of the first
        that did. Unknown ones (finished after the last snapshot) are left out."""
        if not self.snapshots:
            return {}
        epoch = self.snapshots[0].xmax - self.snapshots[0].xmax % XID_MODULO
        xmaxes = [s.xmax for s in self.snapshots]
        found: dict[int, tuple[float, float]] = {}
        for xmin in xmins:
            full = epoch + xmin
            if full >= self.snapshots[0].xmax + XID_MODULO // 2:
                full -= XID_MODULO  # from before the epoch boundary
            elif full < self.snapshots[0].xmax - XID_MODULO // 2:
                full += XID_MODULO
            index = bisect.bisect_right(xmaxes, full)  # first snapshot that knows this xid
            while index < len(self.snapshots) and full in self.snapshots[index].in_progress:
                index += 1
            if index < len(self.snapshots):
                earliest = self.snapshots[index - 1].sent if index else float("-inf")
                found[xmin] = (earliest, self.snapshots[index].received)
        return found
