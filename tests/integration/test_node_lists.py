"""Node lists at the process boundary: a bad list stops each service with exit 2 and one line
naming the variable and the entry; a list whose first node is dead connects to the next one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aio_pika
import asyncpg
import httpx
import pytest
import structlog
from yarl import URL

from common.amqp import CONNECT_INITIAL_BACKOFF, connect_amqp, declare_topology
from common.nodes import FailoverConnection, mask
from tests.support.consumer_status import StatusApi, consumer_env, publish, started, stored
from tests.support.ports import free_port
from tests.support.processes import ServiceProcess, Spawn, run_module
from tests.support.producer import collect_until, producer_env, wait_broker_connected
from tests.support.services import Endpoints
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

GOOD_AMQP = "amqp://u:secret@rabbit-1:5672/"
AMQP = {"AMQP_URI": GOOD_AMQP, "QUEUE_NAME": "q"}
POSTGRES = {"POSTGRES_HOST": "db-1", "POSTGRES_DB": "x", "POSTGRES_USER": "x"}
BASE = {
    "producer": AMQP,
    "consumer": {**AMQP, **POSTGRES, "TESTER_ENDPOINT": "http://127.0.0.1:9"},
    "routine": POSTGRES,
}
BAD_LISTS = [
    ("producer", {"AMQP_URI": f"{GOOD_AMQP},"}, "AMQP_URI: entry 2 of 2 is empty"),
    ("producer", {"AMQP_URI": f"{GOOD_AMQP},amqp://u:secret@r2:x/"}, "AMQP_URI: entry 2 of 2"),
    ("consumer", {"AMQP_URI": f"{GOOD_AMQP},amqp://u:secret@r2/v"}, "names vhost 'v'"),
    ("consumer", {"AMQP_URI": f"{GOOD_AMQP},amqp://w:secret@r2/"}, "other credentials"),
    ("consumer", {"POSTGRES_HOST": "db-1,,db-2"}, "POSTGRES_HOST: entry 2 of 3 is empty"),
    ("routine", {"POSTGRES_HOST": "db-1,db-2", "POSTGRES_PORT": "1,2,3"}, "3 ports for 2 hosts"),
    ("routine", {"POSTGRES_HOST": "db-1,db-2", "POSTGRES_PORT": "5432,"}, "entry 2 of 2 is empty"),
]


@pytest.mark.parametrize(("service", "values", "expected"), BAD_LISTS)
def test_a_bad_list_stops_the_service_with_one_line_naming_the_entry(
    service: str, values: dict[str, str], expected: str, tmp_path: Path
) -> None:
    result = run_module(service, {**BASE[service], **values}, tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{service}: configuration error: ")
    assert expected in lines[0]
    assert "secret" not in lines[0]


def _dead_first(uri: str, dead_nodes: int = 1) -> str:
    """``uri`` behind nodes that refuse connections (free ports nothing listens on)."""
    address = uri.split("@", 1)[1].split("/", 1)[0]
    dead = [uri.replace(address, f"127.0.0.1:{free_port()}") for _ in range(dead_nodes)]
    return ",".join([*dead, uri])


async def test_producer_with_a_dead_first_node_publishes_to_the_second(
    spawn: Spawn,
    endpoints: Endpoints,
    amqp_connection: aio_pika.abc.AbstractConnection,
    queue_name: str,
    tmp_path: Path,
) -> None:
    # Shuffled per process: with three dead nodes before the live one, a dead node comes first in
    # 3 of 4 starts; the chance that none of 8 starts tries one first is 4^-8 (1.5e-5; with one
    # dead node and 4 starts it was 1/16, and CI hit it). Every start must connect.
    for attempt in range(8):
        port = free_port()
        uri = _dead_first(endpoints.amqp_uri, dead_nodes=3)
        env = producer_env(uri, queue_name, tmp_path / "s.db", port)
        producer = spawn("producer", env)
        wait_broker_connected(producer, port)
        async with httpx.AsyncClient(timeout=1.0) as client:
            answer = await client.post(
                f"http://127.0.0.1:{port}/callback", json={"object_ids": [attempt]}
            )
        assert answer.status_code == 202 and answer.json()["spooled"] is False
        await collect_until(amqp_connection, queue_name, {attempt}, timeout=10)
        assert producer.terminate(timeout=10) == 0
        if '"node_unreachable"' in producer.output():
            return
    pytest.fail("no dead node came first in 8 shuffled starts")


@pytest.fixture
async def status_api() -> AsyncIterator[StatusApi]:
    api = await StatusApi(delay=(0.01, 0.02)).start()
    try:
        yield api
    finally:
        await api.stop()


async def test_consumer_with_dead_first_nodes_consumes_and_writes_through_the_live_ones(
    spawn: Callable[..., ServiceProcess],
    service_env: dict[str, str],
    status_api: StatusApi,
    amqp_connection: aio_pika.abc.AbstractConnection,
    queue_name: str,
    db_pool: asyncpg.Pool,
) -> None:
    env = consumer_env(service_env, status_api)
    env["AMQP_URI"] = _dead_first(env["AMQP_URI"])
    # libpq-style lists: a refused host first, then the real one.
    env["POSTGRES_HOST"] = f"127.0.0.1,{env['POSTGRES_HOST']}"
    env["POSTGRES_PORT"] = f"{free_port()},{env['POSTGRES_PORT']}"
    await started(spawn("consumer", env))
    channel = await amqp_connection.channel(publisher_confirms=True)
    await declare_topology(channel, queue_name)
    await publish(channel, queue_name, [10, 11, 12], callback_id="cb")

    async def both_stored() -> bool:
        return set(await stored(db_pool)) == {10, 12}

    await eventually(both_stored, timeout=20, what="online ids stored via the live nodes")


def test_routine_with_a_dead_first_host_expires_on_the_live_one(
    spawn: Spawn, service_env: dict[str, str]
) -> None:
    env = {
        **service_env,
        "POSTGRES_HOST": f"127.0.0.1,{service_env['POSTGRES_HOST']}",
        "POSTGRES_PORT": f"{free_port()},{service_env['POSTGRES_PORT']}",
        "ROUTINE_INTERVAL": "100ms",
    }
    routine = spawn("routine", env)
    routine.wait_for_log('"routine_started"', timeout=20)
    routine.wait_for_log('"expiry_tick"', timeout=10)
    assert '"expiry_failed"' not in routine.output()


def _rotations() -> list[asyncio.Task[object]]:
    return [
        task
        for task in asyncio.all_tasks()
        if getattr(task.get_coro(), "__qualname__", "").startswith("FailoverConnection.")
    ]


async def test_a_dropped_connection_moves_through_the_list_and_owns_its_rotation(
    endpoints: Endpoints,
) -> None:
    """The broker connection drops: the connection points itself at the next node (dead here),
    keeps moving after each wait of the backoff (at most ``max_backoff``) until one answers, and
    reconnects to the live one. Its pacing task is its own: closing the connection mid-rotation
    cancels and awaits it."""
    live = URL(endpoints.amqp_uri)
    dead = str(live.with_port(free_port()))
    with structlog.testing.capture_logs() as logs:
        connection = await connect_amqp(
            f"{live},{dead}", connection_name="failover-test", deadline=10, max_backoff=0.2
        )
        try:
            assert isinstance(connection, FailoverConnection)
            assert str(connection.url) == str(live)
            assert connection.transport is not None
            await connection.transport.connection.close()  # the node goes away under it
            await eventually(
                lambda: any(e["event"] == "broker_reconnected" for e in logs),
                timeout=10,
                what="reconnected through the list",
            )
            assert connection.connected.is_set() and str(connection.url) == str(live)
            moved_to = [e["next_node"] for e in logs if e["event"] == "broker_failover"]
            assert moved_to[0] == mask(dead) and moved_to[-1] == mask(str(live))
            waits = [e["retry_in_s"] for e in logs if "retry_in_s" in e]
            assert waits and all(0.1 / 2 <= wait <= 0.2 for wait in waits)  # the capped backoff
            assert connection.reconnect_interval == CONNECT_INITIAL_BACKOFF  # back to the start

            assert connection.transport is not None
            await connection.transport.connection.close()
            await eventually(lambda: bool(_rotations()), timeout=5, what="rotating again")
        finally:
            await connection.close()
    assert _rotations() == []
