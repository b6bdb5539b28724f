"""One suite per store for the chaos scenarios: started once, brought back to a steady state
before each.

The broker is a RabbitMQ node of the run's own (so a scenario may restart it), shared by both
suites. The PostgreSQL suite's database is one of its own (so ``pg_terminate_backend`` hits only
the suite's sessions); the Redis suite's Redis a ``redis-server`` of its own with AOF
(``appendfsync everysec``), and no routine. Services reach broker and store through TCP proxies
that a scenario can cut or black-hole. The scenarios marked :data:`BOTH_STORES` run on each suite
in turn (never both at once); their rows share one results file.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import aio_pika
import pytest

from common.amqp import RETRY_TIERS_MS, Topology
from common.broker.pubsub_clients import ensure
from common.broker.pubsub_topology import PubSubSettings, PubSubTopology
from tests.support.amqp import amqp_uri_via
from tests.support.database import RUN_ID, admin, postgres_env, with_database
from tests.support.proxy import TcpProxy
from tests.support.pubsub_emulator import EMULATOR_PROJECT, running_emulator
from tests.support.rabbit_node import PrivateRabbitNode
from tests.support.redis_server import RedisServer
from tests.support.services import Endpoints
from tests.support.suite import Suite
from tests.support.waiting import eventually

from .harness import RESULTS_PATH, ChaosSuite, ScenarioResult, now

LOGS_PATH = RESULTS_PATH.parent / "chaos-logs"

# Sustained load: 10 callbacks/s of 0..100 ids from 0..999, status answers in 5-60 ms. Retries
# short enough to finish inside a scenario; TTL long so that expiry never confuses the audit.
OUTAGE_S = 30.0  # the cut length, broker and database
# A stalled RabbitMQ path: longer than every publish/confirm timeout, shorter than heartbeats.
HANG_S = 10.0

KNOBS = {
    "TESTER_INTERVAL": "100ms",
    "TESTER_DELAY_MIN": "5ms",
    "TESTER_DELAY_MAX": "60ms",
    "TESTER_ID_RANGE": "1000",
    "TESTER_MAX_IDS": "100",
    "TESTER_LEDGER_SIZE": "100000",
    "OBJECT_TTL": "1h",
    "ROUTINE_INTERVAL": "500ms",
    "ROUTINE_MAX_BACKOFF": "2s",
    "STATUS_TIMEOUT": "1s",
    "RETRY_BASE_DELAY": "250ms",
    "RETRY_MAX_DELAY": "2s",
    # 30 % faulty answers: 30 attempts leave 0.3^30 ≈ 2e-16 of an id to the dead letters.
    "MAX_ATTEMPTS": "30",
    "RELAY_PUBLISH_TIMEOUT": "1s",
    "BROKER_MAX_BACKOFF": "1s",
    "SHUTDOWN_GRACE": "5s",
    "WATCHDOG_INTERVAL": "5s",
    "STARTUP_TIMEOUT": "30s",
    "LOG_LEVEL": "info",
}
TESTER_CALM = {"error_rate": 0, "hang_rate": 0, "garbage_rate": 0, "paused": False}


def _host_port(uri: str) -> tuple[str, int]:
    parts = urlsplit(uri)
    return parts.hostname or "127.0.0.1", parts.port or 5672


def _answers(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class ChaosRun:
    """What the run's suites share: the broker, and one list of results (both stores' rows)."""

    base: Path
    amqp_uri: str
    node: PrivateRabbitNode | None
    started_at: datetime
    results: list[ScenarioResult] = field(default_factory=list)


@pytest.fixture(scope="package")
def chaos_run(endpoints: Endpoints) -> Iterator[ChaosRun]:
    # Not pytest's tmp_path: its parents are 0700, and the private node runs as user rabbitmq.
    started_at = now()
    base = Path(tempfile.mkdtemp(prefix="lastseen-chaos-"))
    base.chmod(0o755)
    node = PrivateRabbitNode(base / "rabbit") if PrivateRabbitNode.available() is None else None
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, base, ignore_errors=True)
        if node is not None:
            cleanup.callback(node.stop)
            node.start()
        yield ChaosRun(base, node.amqp_uri if node else endpoints.amqp_uri, node, started_at)


# The default param, named, so that a test parametrized with other suites shares its instance.
@pytest.fixture(scope="package", params=["rabbitmq-postgres"])
def chaos_suite(
    request: pytest.FixtureRequest, chaos_run: ChaosRun, endpoints: Endpoints
) -> Iterator[ChaosSuite]:
    """The suite a test asks for (:data:`BOTH_STORES`, :data:`BOTH_BROKERS`, :data:`EVERY_SUITE`;
    RabbitMQ and PostgreSQL by default), one at a time, each with a queue of its own."""
    variant = request.param
    broker, store = variant.split("-")
    database = f"lastseen_chaos_{RUN_ID}_{uuid.uuid4().hex[:4]}"
    queue = f"lastseen_chaos_{RUN_ID}_{store}"
    workdir = chaos_run.base / f"suite-{variant}"
    amqp_uri = chaos_run.amqp_uri
    with contextlib.ExitStack() as cleanup:
        # The services' logs outlive the run, for whoever has to explain a failed scenario.
        cleanup.callback(_keep_logs, workdir, variant)
        if broker == "pubsub":
            emulator = cleanup.enter_context(running_emulator())
            broker_proxy = TcpProxy(*_host_port(f"//{emulator.host}")).start()
            broker_env = {
                "BROKER": "pubsub",
                "PUBSUB_PROJECT_ID": EMULATOR_PROJECT,
                "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{broker_proxy.port}",
            }
            # Made before the services start (they keep what exists): a 10 s ack deadline, so
            # that a killed consumer's messages come back within a scenario.
            asyncio.run(
                ensure(
                    PubSubSettings(EMULATOR_PROJECT, emulator.host),
                    PubSubTopology.for_queue(EMULATOR_PROJECT, queue),
                    max_delivery_attempts=int(KNOBS["MAX_ATTEMPTS"]),
                    ack_deadline_s=10,
                )
            )
        else:
            cleanup.callback(_delete_queues, amqp_uri, queue)
            broker_proxy = TcpProxy(*_host_port(amqp_uri)).start()
            broker_env = {"AMQP_URI": amqp_uri_via(amqp_uri, broker_proxy)}
        cleanup.callback(broker_proxy.stop)
        server: RedisServer | None = None
        if store == "redis":
            server = RedisServer(chaos_run.base / "redis", config={"appendfsync": "everysec"})
            cleanup.callback(server.remove)
            server.start()
            db_proxy = TcpProxy("127.0.0.1", server.port).start()
            store_env = {"STORE": "redis", "REDIS_URL": f"redis://127.0.0.1:{db_proxy.port}/0"}
        else:
            admin(endpoints.database_url, f'CREATE DATABASE "{database}"')
            cleanup.callback(
                admin,
                endpoints.database_url,
                f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)',
            )
            db_proxy = TcpProxy(*endpoints.database_host_port).start()
            store_env = {
                **postgres_env(with_database(endpoints.database_url, database)),
                "POSTGRES_HOST": "127.0.0.1",
                "POSTGRES_PORT": str(db_proxy.port),
            }
        cleanup.callback(db_proxy.stop)
        env = {**broker_env, "QUEUE_NAME": queue, **store_env, **KNOBS}
        suite = Suite.create(env, workdir)
        cleanup.callback(suite.stop_all)
        # Keys expire by themselves: a Redis deployment runs no routine.
        suite.start_all(except_=("routine",) if store == "redis" else ())
        chaos = ChaosSuite(
            suite,
            broker_proxy,
            db_proxy,
            chaos_run.node,
            with_database(endpoints.database_url, database),
            database,
            KNOBS,
            results=chaos_run.results,
            started_at=chaos_run.started_at,
            redis=server,
            pubsub=broker == "pubsub",
            # Pub/Sub's path hangs as long as a cut lasts (issue 21); RabbitMQ's shorter than its
            # heartbeat, so that the hang is not noticed as a cut.
            hang_s=OUTAGE_S if broker == "pubsub" else HANG_S,
        )
        yield chaos


# Which suites a scenario runs on (the others: RabbitMQ and PostgreSQL alone).
BOTH_STORES = pytest.mark.parametrize(
    "chaos_suite", ["rabbitmq-postgres", "rabbitmq-redis"], indirect=True
)
BOTH_BROKERS = pytest.mark.parametrize(
    "chaos_suite", ["rabbitmq-postgres", "pubsub-postgres"], indirect=True
)
EVERY_SUITE = pytest.mark.parametrize(
    "chaos_suite", ["rabbitmq-postgres", "rabbitmq-redis", "pubsub-postgres"], indirect=True
)


def _keep_logs(workdir: Path, store: str) -> None:
    kept = LOGS_PATH / store
    shutil.rmtree(kept, ignore_errors=True)
    kept.mkdir(parents=True, exist_ok=True)
    for log in workdir.glob("*.log"):
        shutil.copy(log, kept / log.name)


def _delete_queues(amqp_uri: str, queue: str) -> None:
    async def delete() -> None:
        connection = await aio_pika.connect(amqp_uri)
        try:
            channel = await connection.channel()
            topology = Topology(queue)
            for name in [topology.work, topology.dead, *map(topology.retry, RETRY_TIERS_MS)]:
                await channel.queue_delete(name)
        finally:
            await connection.close()

    asyncio.run(delete())


@pytest.fixture
async def chaos(chaos_suite: ChaosSuite) -> AsyncIterator[ChaosSuite]:
    """The shared suite in a steady state: every fault lifted, every service running."""
    await steady(chaos_suite)
    yield chaos_suite


async def steady(chaos: ChaosSuite) -> None:
    """Undo what a failed scenario may have left behind, then wait for callbacks to flow."""
    chaos.broker_proxy.restore()
    chaos.db_proxy.restore()
    if chaos.redis is not None and not chaos.redis.running:
        chaos.redis.start()
    if chaos.node is not None and not _answers(chaos.node.port):
        chaos.node.start()
    suite = chaos.suite
    for name, process in list(suite.processes.items()):
        if not process.running():
            suite.restart(name)
    suite.tester("POST", "/control", json=TESTER_CALM)
    start = suite.callbacks_sent()

    async def answered_again() -> bool:
        records = [r for r in chaos.ledger_after(start) if r["ok"]]
        return len(records) >= 5

    await eventually(answered_again, timeout=30, interval=0.2, what="steady load")
