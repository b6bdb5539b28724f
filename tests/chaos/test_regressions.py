"""Bugs the chaos scenarios found, each pinned by a small, fast test of its own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import aio_pika
import asyncpg
import pytest

from common.amqp import declare_topology
from common.db import migrate
from common.store.postgres import PostgresStore
from consumer.batch_writer import BatchWriter
from routine.expiry import DATABASE_ERRORS as ROUTINE_DATABASE_ERRORS
from tests.support.amqp import amqp_uri_via
from tests.support.consumer_status import StatusApi, consumer_env, publish, started, stored
from tests.support.processes import ServiceProcess
from tests.support.proxy import TcpProxy
from tests.support.services import Endpoints
from tests.support.waiting import eventually

pytestmark = pytest.mark.chaos


@pytest.fixture
async def status_api() -> AsyncIterator[StatusApi]:
    api = await StatusApi(delay=(0.0, 0.01)).start()
    try:
        yield api
    finally:
        await api.stop()


async def test_consumer_outlives_a_broker_outage_longer_than_its_watchdog_interval(
    spawn: Callable[..., ServiceProcess],
    service_env: dict[str, str],
    status_api: StatusApi,
    endpoints: Endpoints,
    make_proxy: Callable[[str, int], TcpProxy],
    amqp_connection: aio_pika.abc.AbstractConnection,
    queue_name: str,
    db_pool: asyncpg.Pool,
) -> None:
    """Found by the 30 s broker cut (WATCHDOG_INTERVAL defaults to 30 s): the watchdog opened a
    probe channel on the robust connection while it was down, aio-pika raised
    ``RuntimeError("Connection was not opened")``, which ``supervise`` does not catch, and the
    consumer exited with a traceback instead of waiting for the broker."""
    proxy = make_proxy(*endpoints.amqp_host_port)
    env = {
        **consumer_env(service_env, status_api, WATCHDOG_INTERVAL="1s"),
        "AMQP_URI": amqp_uri_via(endpoints.amqp_uri, proxy),
    }
    consumer = await started(spawn("consumer", env))
    proxy.cut()
    await asyncio.sleep(4.0)  # the outage: several watchdog intervals
    assert consumer.running(), consumer.output()[-3000:]
    proxy.restore()
    channel = await amqp_connection.channel(publisher_confirms=True)
    await declare_topology(channel, queue_name)
    await publish(channel, queue_name, [2, 4, 5])

    async def resumed() -> bool:
        return {2, 4} <= set(await stored(db_pool))

    await eventually(resumed, timeout=20, what="the consumer resumed after the outage")
    assert "Traceback" not in consumer.output()


VICTIM = "lastseen-terminated"


class _Rows:
    def __init__(self, stored: list[int]) -> None:
        self.on_stored = stored.extend

    def on_health(self, healthy: bool) -> None:
        pass


async def test_batch_writer_survives_sessions_terminated_mid_statement(database_url: str) -> None:
    """Found by the pg_terminate_backend scenario (1 run in 4): a session terminated while a
    pool connection was being released makes asyncpg raise ``InternalClientError: cannot switch
    to state 15; another operation (2) is in progress``. It is not among the batch writer's
    DATABASE_ERRORS, so the writer task died and the consumer exited with a traceback."""
    pool = await asyncpg.create_pool(
        database_url, min_size=2, max_size=4, server_settings={"application_name": VICTIM}
    )
    killer = await asyncpg.connect(database_url)
    stored_rows: list[int] = []
    writer: BatchWriter[int] = BatchWriter(PostgresStore(pool), max_rows=50, max_delay=0.005)
    try:
        await migrate(pool)
        task = asyncio.create_task(writer.run(_Rows(stored_rows)))
        deadline = time.monotonic() + 3.0
        row = 0
        while time.monotonic() < deadline and not task.done():
            for _ in range(40):
                writer.add(row % 3000, datetime.now(UTC), row)
                row += 1
            await killer.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = $1",
                VICTIM,
            )
            await asyncio.sleep(0.01)
        assert not task.done(), f"the batch writer died: {task.exception()!r}"
        writer.close()
        await asyncio.wait_for(task, 30)
        assert sorted(stored_rows) == list(range(row)), "a row was never stored"
    finally:
        await killer.close()
        await pool.close()


def test_the_routine_counts_the_same_errors_as_database_errors() -> None:
    """The routine's loop has the same guard (routine/expiry.py): it must skip a tick on the
    error above, not crash."""
    assert issubclass(asyncpg.InternalClientError, ROUTINE_DATABASE_ERRORS)
