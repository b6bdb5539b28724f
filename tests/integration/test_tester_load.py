"""The tester holds 5,000 concurrent slow requests: a consumer with thousands in flight must be
limited by itself, never by its test double."""

from __future__ import annotations

import asyncio
import gc
import json
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import uvloop

from tests.support.processes import ServiceProcess
from tests.support.tester import start_tester

pytestmark = pytest.mark.integration

CONCURRENT = 5000


def raise_open_files_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= needed, "raise `ulimit -n`"


@dataclass
class Burst:
    elapsed: float
    answers: list[tuple[int, bytes]]
    stats: dict[str, Any]


async def fire(url: str, count: int) -> Burst:
    """``count`` GETs at once, each on a new connection (a fresh pool: the connection storm is part
    of the load); the wall time until the last answer, the answers, the tester's stats."""
    connector = aiohttp.TCPConnector(limit=count + 100)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

        async def one(object_id: int) -> tuple[int, bytes]:
            async with http.get(f"{url}/objects/{object_id}") as response:
                return response.status, await response.read()

        # The collector walking the test process's large heap, again and again while 5,000
        # requests are built, would be measured as the tester's slowness.
        gc.disable()
        try:
            started = time.perf_counter()
            answers = await asyncio.gather(*(one(n) for n in range(count)))
            elapsed = time.perf_counter() - started
        finally:
            gc.enable()
        async with http.get(f"{url}/stats") as response:
            return Burst(elapsed, answers, await response.json())


async def control(url: str, change: dict[str, Any]) -> None:
    async with aiohttp.ClientSession() as http:
        for path, body in (("/control", change), ("/stats/reset", {})):
            async with http.post(url + path, json=body) as response:
                assert response.status == 200


async def instant_then_slow(url: str, count: int) -> tuple[Burst, Burst]:
    await control(url, {"delay_min": 0, "delay_max": 0})
    instant = await fire(url, count)
    await control(url, {"delay_min": "1s", "delay_max": "1s"})
    return instant, await fire(url, count)


def test_5000_concurrent_requests_of_1s_are_all_answered_within_about_3s(
    spawn: Callable[..., ServiceProcess], unused_tcp_port: int
) -> None:
    raise_open_files_limit(CONCURRENT + 500)
    _, url = start_tester(
        spawn, {"CALLBACK_ENDPOINT": f"http://127.0.0.1:{unused_tcp_port}", "TESTER_INTERVAL": "1h"}
    )
    # uvloop on the client side too: the stock loop spends more on 5,000 connects than the tester.
    instant, slow = uvloop.run(instant_then_slow(url, CONCURRENT))

    for burst in (instant, slow):
        assert [status for status, _ in burst.answers] == [200] * CONCURRENT
        assert all(
            json.loads(body) == {"id": n, "online": n % 2 == 0}
            for n, (_, body) in enumerate(burst.answers)
        )
        assert burst.stats["objects"]["requests"] == CONCURRENT
    assert slow.stats["objects"]["peak_in_flight"] >= 0.9 * CONCURRENT, "held at once, not queued"
    # Pushing 5,000 requests through costs the same with or without the delay (the client is most
    # of it, and it varies with what else runs on the two cores); held concurrently, the 1 s
    # delays add about 1 s in all. Measured here: about 1.0 s and 1.9 s.
    figures = f"instant burst {instant.elapsed:.2f}s, 1 s burst {slow.elapsed:.2f}s"
    assert slow.elapsed < instant.elapsed + 1.0 + 0.75, figures
    assert slow.elapsed < 4.0, figures
