"""The database probe behind ``/ready``: it notices an outage with nothing else going on."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
import pytest

from common.probes import DatabaseProbe
from common.store.postgres import PostgresStore
from tests.support.proxy import TcpProxy
from tests.support.services import Endpoints

pytestmark = pytest.mark.integration


async def test_the_probe_follows_a_cut_and_the_return_of_the_database(
    endpoints: Endpoints, database_url: str, make_proxy: Callable[[str, int], TcpProxy]
) -> None:
    proxy = make_proxy(*endpoints.database_host_port)
    dsn = database_url.replace(
        f"{endpoints.database_host_port[0]}:{endpoints.database_host_port[1]}",
        f"127.0.0.1:{proxy.port}",
    )
    assert str(proxy.port) in dsn
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        probe = DatabaseProbe(PostgresStore(pool).ping, timeout=1.0)
        assert await probe.check() is True
        proxy.cut()
        assert await probe.check() is False
        assert probe.ok is False
        proxy.restore()
        assert await probe.check() is True
        proxy.blackhole()
        assert await probe.check() is False, "a hung database counts as away after the timeout"
        proxy.restore()
    finally:
        pool.terminate()
