"""The spool on a real SQLite file: order, group commit, durability across reopen, failures."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from common.messages import OutgoingMessage
from producer.spool import Spool, SpoolUnavailable
from tests.support.spool import fill_disk, on_spool_thread

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
    await spool.append([message(1), message(2)])
    await spool.append([message(3)])
    assert spool.depth == 3
    oldest = await spool.oldest(2)
    assert [entry.message for entry in oldest] == [message(1), message(2)]
    await spool.delete([oldest[0].seq])
    assert spool.depth == 2
    assert [entry.message for entry in await spool.oldest(10)] == [message(2), message(3)]


async def test_concurrent_appends_are_group_committed_in_arrival_order(spool: Spool) -> None:
    transactions = 0
    original = spool._append_sync

    def counting(messages: list[OutgoingMessage]) -> None:
        nonlocal transactions
        transactions += 1
        original(messages)

    spool._append_sync = counting  # type: ignore[method-assign]
    await asyncio.gather(*(spool.append([message(n)]) for n in range(200)))
    assert [entry.message for entry in await spool.oldest(500)] == [message(n) for n in range(200)]
    assert spool.depth == 200
    # The first append commits alone; the 199 that queued behind it share few transactions.
    assert transactions < 20, transactions


async def test_writes_run_off_the_event_loop_thread(spool: Spool) -> None:
    threads: set[int] = set()
    original = spool._append_sync

    def recording(messages: list[OutgoingMessage]) -> None:
        threads.add(threading.get_ident())
        original(messages)

    spool._append_sync = recording  # type: ignore[method-assign]
    await spool.append([message(1)])
    assert threads and threading.get_ident() not in threads


async def test_committed_messages_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite3"
    first = await Spool.open(path)
    await first.append([message(1), message(2)])
    # No close: a crash leaves only what was committed.
    second = await Spool.open(path)
    try:
        assert second.depth == 2
        assert second.appended.is_set()
        assert [entry.message for entry in await second.oldest(10)] == [message(1), message(2)]
        mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"
    finally:
        await second.close()
        await first.close()


async def test_a_full_disk_fails_the_append_and_marks_the_spool_unwritable(spool: Spool) -> None:
    await spool.append([message(0)])
    await fill_disk(spool)
    with pytest.raises(SpoolUnavailable, match="full"):
        await spool.append([OutgoingMessage(f"big.{n}", b"x" * 8192) for n in range(20)])
    assert not spool.writable
    assert spool.depth == 1
    assert [entry.message for entry in await spool.oldest(10)] == [message(0)]

    await on_spool_thread(spool, "PRAGMA max_page_count = 1000000")
    await spool.append([message(1)])
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
    await spool.append([message(n) for n in range(10)])
    oldest = await spool.oldest(10)
    # Hold the spool thread so that a commit of appends and then a delete queue up behind it.
    holding = asyncio.create_task(spool._run(time.sleep, 0.1))
    appends = [asyncio.create_task(spool.append([message(n)])) for n in range(10, 30)]
    for _ in range(3):  # let the appends start their group commit
        await asyncio.sleep(0)
    assert spool._flusher is not None and not spool._flusher.done()
    deleting = asyncio.create_task(spool.delete([entry.seq for entry in oldest[:5]]))
    await asyncio.gather(holding, *appends, deleting)
    [(count,)] = await on_spool_thread(spool, "SELECT count(*) FROM spooled_message")
    assert spool.depth == count == 25
