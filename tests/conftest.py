"""Fixtures on the real RabbitMQ and PostgreSQL: a database per run, queues per test, proxies for
outages, and services started as real processes."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path

import aio_pika
import asyncpg
import hypothesis
import pytest
import redis.asyncio
import uvloop

from common import db as dbmod
from common.amqp import RETRY_TIERS_MS, Topology
from common.store import ObjectStore
from common.store.postgres import PostgresStore
from common.store.redis import RedisStore
from tests.support.database import RUN_ID, admin, postgres_env, with_database
from tests.support.processes import ServiceProcess
from tests.support.producer_brokers import (
    BROKERS,
    BrokerUnderTest,
    RabbitBroker,
    pubsub_broker,
)
from tests.support.proxy import TcpProxy
from tests.support.pubsub_emulator import EmulatorMissing, find_emulator, running_emulator
from tests.support.redis_server import RedisServer
from tests.support.services import Endpoints, ServicesUnavailable, provide_endpoints

# The status clients speak to sockets through the loop's transports: their tests run on asyncio's
# loop and on uvloop, the loop every service runs on (common/entrypoint.py); the rest on asyncio's.
UVLOOP_MODULES = frozenset({"test_consumer_status_client.py"})


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    if item.path.name in UVLOOP_MODULES:
        return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}


# CI explores the same examples every run, so a red run is reproducible and never a coin toss;
# local runs keep searching new ones (and remember failures in .hypothesis/).
hypothesis.settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    hypothesis.settings.load_profile("ci")


@pytest.fixture(scope="session")
def endpoints() -> Iterator[Endpoints]:
    try:
        with provide_endpoints() as found:
            yield found
    except ServicesUnavailable as error:
        pytest.exit(f"test services unavailable: {error}", returncode=4)


@pytest.fixture(scope="session")
def database_url(endpoints: Endpoints) -> Iterator[str]:
    """A database of this test run's own, dropped at the end."""
    name = f"lastseen_test_{RUN_ID}"
    admin(endpoints.database_url, f'CREATE DATABASE "{name}"')
    yield with_database(endpoints.database_url, name)
    admin(endpoints.database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def make_database(endpoints: Endpoints) -> Iterator[Callable[[], str]]:
    """Extra empty databases for tests that need a fresh schema; dropped afterwards."""
    created: list[str] = []

    def make() -> str:
        name = f"lastseen_test_{RUN_ID}_{len(created)}_{uuid.uuid4().hex[:4]}"
        admin(endpoints.database_url, f'CREATE DATABASE "{name}"')
        created.append(name)
        return with_database(endpoints.database_url, name)

    yield make
    for name in created:
        admin(endpoints.database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def db_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the run's database, schema applied, ``object`` empty."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    await dbmod.migrate(pool)
    await pool.execute("TRUNCATE object")
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of this run's own (never the machine's 6379), removed at the end."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The run's Redis, emptied for this test (it is ours: flushing it touches nobody else)."""
    client = redis_server.client()
    try:
        client.flushall()
    finally:
        client.close()
    return redis_server.url


STORES = ("postgres", "redis")


@pytest.fixture(params=STORES)
async def store(
    request: pytest.FixtureRequest, database_url: str, redis_url: str
) -> AsyncIterator[ObjectStore]:
    """Each store, empty: the tests that take it run once against PostgreSQL, once against
    Redis (OBJECT_TTL 1h, so times taken at import stay alive through a long run)."""
    opened: ObjectStore
    if request.param == "postgres":
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
        await dbmod.migrate(pool)
        await pool.execute("TRUNCATE object")
        opened = PostgresStore(pool)
    else:
        client = redis.asyncio.Redis.from_url(redis_url)
        opened = RedisStore(client, prefix="object:", ttl_seconds=3600)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def queue_name(endpoints: Endpoints) -> AsyncIterator[str]:
    """A work-queue name of this test's own; its whole topology is deleted afterwards."""
    name = f"lastseen_test_{RUN_ID}_{uuid.uuid4().hex[:8]}"
    yield name
    topology = Topology(name)
    connection = await aio_pika.connect(endpoints.amqp_uri)
    try:
        channel = await connection.channel()
        for queue in [topology.work, topology.dead, *map(topology.retry, RETRY_TIERS_MS)]:
            await channel.queue_delete(queue)
    finally:
        await connection.close()


@pytest.fixture
async def amqp_connection(endpoints: Endpoints) -> AsyncIterator[aio_pika.abc.AbstractConnection]:
    connection = await aio_pika.connect(endpoints.amqp_uri)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
def service_env(endpoints: Endpoints, database_url: str, queue_name: str) -> dict[str, str]:
    """Everything a service needs to reach this test's broker, queue and database."""
    return {
        "AMQP_URI": endpoints.amqp_uri,
        "QUEUE_NAME": queue_name,
        **postgres_env(database_url),
        "LOG_LEVEL": "info",
        "STARTUP_TIMEOUT": "20s",
    }


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    """Start ``python -m <module>`` as a real process; every one is stopped afterwards."""
    started: list[ServiceProcess] = []

    def start(module: str, env: Mapping[str, str], *args: str) -> ServiceProcess:
        process = ServiceProcess(module, env, tmp_path / "services", args).start()
        started.append(process)
        return process

    yield start
    for process in reversed(started):
        process.stop()


@pytest.fixture
def make_proxy() -> Iterator[Callable[[str, int], TcpProxy]]:
    """TCP proxies that a test can cut, black-hole and restore."""
    proxies: list[TcpProxy] = []

    def make(host: str, port: int) -> TcpProxy:
        proxy = TcpProxy(host, port).start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.stop()


TIERS = (
    "unit",
    "integration",
    "e2e",
    "chaos",
    "compose",
    "cluster",
    "slowclients",
    "rediscluster",
    "faults",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Each test carries exactly the tier marker of the folder it lives in (tests/<tier>/...)."""
    tests_root = Path(__file__).parent
    wrong = []
    for item in items:
        folder = item.path.relative_to(tests_root).parts[0]
        marked = {mark.name for mark in item.iter_markers() if mark.name in TIERS}
        if folder not in TIERS or marked != {folder}:
            wrong.append(f"{item.nodeid}: in tests/{folder}/, marked {sorted(marked) or 'none'}")
    if wrong:
        raise pytest.UsageError(
            "every test needs exactly its folder's tier marker:\n  " + "\n  ".join(wrong)
        )


@pytest.fixture(scope="session")
def pubsub_emulator() -> Iterator[str]:
    """Google's Pub/Sub emulator (``host:port``), started on first use and stopped at the end of
    the run. Missing, it fails the tests that need it with one line — never a skip."""
    try:
        launcher = find_emulator()
    except EmulatorMissing as missing:
        pytest.fail(str(missing), pytrace=False)
    with running_emulator(launcher) as emulator:
        yield emulator.host


@pytest.fixture(params=BROKERS)
async def broker(
    request: pytest.FixtureRequest, endpoints: Endpoints, queue_name: str
) -> AsyncIterator[BrokerUnderTest]:
    """Each broker the producer publishes to, with a queue (or topic and subscriptions) of this
    test's own: the tests that take it run once against RabbitMQ, once against the Pub/Sub
    emulator (started on first use)."""
    if request.param == "rabbitmq":
        connection = await aio_pika.connect(endpoints.amqp_uri)
        try:
            yield RabbitBroker(endpoints.amqp_uri, queue_name, connection)
        finally:
            await connection.close()
    else:
        with pubsub_broker(request.getfixturevalue("pubsub_emulator"), queue_name) as pubsub:
            yield pubsub
