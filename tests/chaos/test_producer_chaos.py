"""The producer as a real process while its broker is cut for 10 s under load."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import aio_pika
import httpx
import pytest

from tests.support.amqp import amqp_uri_via
from tests.support.ports import free_port
from tests.support.processes import Spawn
from tests.support.producer import collect_until, producer_env, ready_state, wait_broker_connected
from tests.support.proxy import TcpProxy
from tests.support.services import Endpoints
from tests.support.waiting import eventually

pytestmark = pytest.mark.chaos


async def test_broker_cut_for_10s_loses_nothing_and_answers_within_1s(
    spawn: Spawn,
    make_proxy: Callable[[str, int], TcpProxy],
    endpoints: Endpoints,
    amqp_connection: aio_pika.abc.AbstractConnection,
    queue_name: str,
    tmp_path: Path,
) -> None:
    proxy = make_proxy(*endpoints.amqp_host_port)
    port = free_port()
    env = producer_env(amqp_uri_via(endpoints.amqp_uri, proxy), queue_name, tmp_path / "s.db", port)
    process = spawn("producer", env)
    wait_broker_connected(process, port)

    latencies: list[float] = []
    answers: list[httpx.Response] = []

    async def one(client: httpx.AsyncClient, n: int) -> None:
        started = time.monotonic()
        # The tester's client timeout: a slower answer fails the test with ReadTimeout.
        response = await client.post("/callback", json={"object_ids": [n, n + 10_000]}, timeout=1.0)
        latencies.append(time.monotonic() - started)
        answers.append(response)

    proxy.cut()
    cut_at = time.monotonic()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        for wave in range(10):  # 100 callbacks spread over the 10 s cut, 10 at a time
            await asyncio.sleep(max(0.0, cut_at + wave - time.monotonic()))
            await asyncio.gather(*(one(client, wave * 10 + k) for k in range(10)))
        await asyncio.sleep(max(0.0, cut_at + 10 - time.monotonic()))
        spooled = ready_state(port)
        proxy.restore()

    assert [a.status_code for a in answers] == [202] * 100
    assert max(latencies) < 1.0
    assert spooled is not None and spooled["spool_depth"] > 0
    expected = {i for n in range(100) for i in (n, n + 10_000)}
    taken = await collect_until(amqp_connection, queue_name, expected, timeout=30)
    assert set(taken) == expected
    await eventually(lambda: (ready_state(port) or {}).get("spool_depth") == 0, timeout=10)
