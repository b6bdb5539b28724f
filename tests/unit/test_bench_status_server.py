"""The benchmark's stand-in status API (``bench/consumer_status_server.py``), served in-process on a
real socket: answers after each id's own delay, keep-alive and in order, counts in /stats, and a
defined answer for what it does not speak."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest

from bench.consumer_status_server import Counters, StatusProtocol, status_delay

pytestmark = pytest.mark.unit

LOW, HIGH = 0.01, 0.05


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, int]]:
    counters = Counters(LOW, HIGH)
    loop = asyncio.get_running_loop()
    served = await loop.create_server(lambda: StatusProtocol(counters), "127.0.0.1", 0)
    yield "127.0.0.1", served.sockets[0].getsockname()[1]
    served.close()
    await served.wait_closed()


async def exchange(address: tuple[str, int], raw: bytes, answers: int) -> list[bytes]:
    """Send ``raw`` on one connection, read ``answers`` complete answers (or until closed)."""
    reader, writer = await asyncio.open_connection(*address)
    writer.write(raw)
    got: list[bytes] = []
    try:
        for _ in range(answers):
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            got.append(head + await reader.readexactly(length))
    finally:
        writer.close()
    return got


def get(target: str) -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n".encode()


async def test_each_id_is_answered_in_order_on_one_kept_alive_connection(
    server: tuple[str, int],
) -> None:
    ids = [7, 8, 1234567890123]
    answers = await exchange(server, b"".join(get(f"/objects/{n}") for n in ids), len(ids))
    bodies = [orjson.loads(answer.split(b"\r\n\r\n", 1)[1]) for answer in answers]
    assert bodies == [{"id": n, "online": n % 2 == 0} for n in ids]
    assert all(b"Connection: keep-alive" in answer for answer in answers)
    stats = await exchange(server, get("/stats"), 1)
    assert orjson.loads(stats[0].split(b"\r\n\r\n", 1)[1]) == {
        "served": 3,
        "in_flight": 0,
        "peak": 1,
    }


async def test_an_answer_waits_at_least_its_ids_delay(server: tuple[str, int]) -> None:
    loop = asyncio.get_running_loop()
    began = loop.time()
    await exchange(server, get("/objects/99"), 1)
    assert loop.time() - began >= status_delay(99, LOW, HIGH)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (get("/objects/abc"), b"HTTP/1.1 400"),
        (b"POST /objects/1 HTTP/1.1\r\n\r\n", b"HTTP/1.1 400"),
        (b"garbage\r\n\r\n", b"HTTP/1.1 400"),
        (b"GET /objects/1 HTTP/1.1\r\n" + b"x" * 9000, b"HTTP/1.1 400"),
        (get("/elsewhere"), b"HTTP/1.1 404"),
    ],
)
async def test_what_it_does_not_speak_gets_an_error_status(
    server: tuple[str, int], raw: bytes, expected: bytes
) -> None:
    answers = await exchange(server, raw, 1)
    assert answers and answers[0].startswith(expected)
