"""The spool on a real SQLite file: order, group commit, durability across reopen, failures."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from common.messages import OutgoingMessage
from producer.spool import Spool, SpoolUnavailable
from tests.support.spool import fill_disk, rows_in_file
from tests.support.waiting import eventually

pytestmark = pytest.mark.unit


def message(n: int) -> OutgoingMessage:
    return OutgoingMessage(f"cb.{n}", f'{{"n": {n}}}'.encode())


@pytest.fixture
async def spool(tmp_path: Path) -> AsyncIterator[Spool]:
    opened = await Spool.open(tmp_path / "nested" / "spool.sqlite3")
    try:
        yield opened
    finally:
        await opened.close()


async def test_oldest_first_and_delete_only_what_was_confirmed(spool: Spool) -> None:
    await spool.append([message(1), message(2)], "cb")
    await spool.append([message(3)], "cb")
    assert spool.depth == 3
    oldest = await spool.oldest(2)
    assert [entry.message for entry in oldest] == [message(1), message(2)]
    await spool.delete([oldest[0].seq])
    assert spool.depth == 2
    assert [entry.message for entry in await spool.oldest(10)] == [message(2), message(3)]


async def test_concurrent_appends_are_group_committed_in_arrival_order(spool: Spool) -> None:
    await asyncio.gather(*(spool.append([message(n)], "cb") for n in range(200)))
    assert [entry.message for entry in await spool.oldest(500)] == [message(n) for n in range(200)]
    assert spool.depth == 200
    # One transaction stamps all its rows with one spooled_at. The first append commits alone;
    # the 199 that queued behind it share few transactions.
    stamps = "SELECT count(DISTINCT spooled_at) FROM spooled_message"
    transactions = rows_in_file(spool.path, stamps)
    assert isinstance(transactions, int) and transactions < 20, transactions


async def test_a_slow_commit_does_not_stall_the_event_loop(spool: Spool) -> None:
    """Another connection holds the write lock: the commit waits on the spool thread, not here."""
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    with contextlib.closing(sqlite3.connect(spool.path, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")
        appending = asyncio.create_task(spool.append([message(1)], "cb"))
        ticker = asyncio.create_task(tick())
        # On the loop thread, the append would hold the loop in SQLite's busy wait (10 s).
        await eventually(lambda: ticks >= 20, timeout=2, what="the loop keeps running")
        assert not appending.done() and spool.depth == 0
        other.execute("COMMIT")
        await asyncio.wait_for(appending, timeout=5)
        ticker.cancel()
    assert spool.depth == 1 == rows_in_file(spool.path)


async def test_committed_messages_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite3"
    first = await Spool.open(path)
    await first.append([message(1), message(2)], "cb")
    # No close: a crash leaves only what was committed.
    second = await Spool.open(path)
    try:
        assert second.depth == 2
        # The relay is told at once that there is something to send.
        await asyncio.wait_for(second.wait_appended(), timeout=1)
        assert [entry.message for entry in await second.oldest(10)] == [message(1), message(2)]
        mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"
    finally:
        await second.close()
        await first.close()


async def test_a_full_disk_fails_the_append_and_marks_the_spool_unwritable(spool: Spool) -> None:
    await spool.append([message(0)], "cb")
    await fill_disk(spool)
    with pytest.raises(SpoolUnavailable, match="full"):
        await spool.append([OutgoingMessage(f"big.{n}", b"x" * 8192) for n in range(20)], "cb")
    assert not spool.writable
    assert spool.depth == 1
    assert [entry.message for entry in await spool.oldest(10)] == [message(0)]

    await spool.limit_pages(None)
    await spool.append([message(1)], "cb")
    assert spool.writable and spool.depth == 2


async def test_an_unusable_path_is_refused_at_open(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(SpoolUnavailable, match="cannot open spool"):
        await Spool.open(blocker / "spool.sqlite3")
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(SpoolUnavailable):
        await Spool.open(garbage)


async def test_depth_stays_exact_while_deletes_and_appends_interleave(spool: Spool) -> None:
    """Appends commit while deletes wait for the spool thread, and the other way round."""
    await spool.append([message(n) for n in range(100)], "cb")
    oldest = await spool.oldest(100)

    async def appending() -> None:
        for n in range(100, 200):
            await spool.append([message(n)], "cb")

    async def deleting() -> None:
        for entry in oldest[:60]:
            await spool.delete([entry.seq])

    await asyncio.gather(appending(), deleting())
    assert spool.depth == rows_in_file(spool.path) == 140
