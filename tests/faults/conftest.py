"""One suite for every faults scenario, started once and brought back to a steady state before each.

The chaos tier's set-up (a private RabbitMQ node, a database of the run's own, the Procfile's
processes behind TCP proxies), plus: the consumers' own proxy to the status API, the producer's
own proxy to the broker, and the spool on a small tmpfs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.chaos.conftest import steady
from tests.support.amqp import amqp_uri_via
from tests.support.database import RUN_ID, admin, postgres_env, with_database
from tests.support.proxy import TcpProxy
from tests.support.rabbit_node import PrivateRabbitNode
from tests.support.services import Endpoints
from tests.support.small_disk import SmallDisk
from tests.support.suite import Suite, expand

from .harness import KNOBS, LOGS_PATH, FaultRows, FaultsSuite

SPOOL_DISK_BYTES = 8 * 2**20


@pytest.fixture(scope="session")
def fault_rows() -> FaultRows:
    """The rows of every scenario of the run, on whichever suite: one results file. The logs of
    the run's suites (var/faults-logs/) start afresh with it."""
    shutil.rmtree(LOGS_PATH, ignore_errors=True)
    return FaultRows(KNOBS)


@pytest.fixture(scope="package")
def faults_suite(endpoints: Endpoints, fault_rows: FaultRows) -> Iterator[FaultsSuite]:
    why = PrivateRabbitNode.available() or SmallDisk.available()
    if why:
        pytest.fail(f"the faults tier cannot run here: {why}")
    # Not pytest's tmp_path: its parents are 0700, and the private node runs as user rabbitmq.
    base = Path(tempfile.mkdtemp(prefix="lastseen-faults-"))
    base.chmod(0o755)
    node = PrivateRabbitNode(base / "rabbit")
    database = f"lastseen_faults_{RUN_ID}_{uuid.uuid4().hex[:4]}"
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, base, ignore_errors=True)
        cleanup.callback(_keep_logs, base / "suite")
        disk = SmallDisk(base / "spool-disk", SPOOL_DISK_BYTES)
        cleanup.callback(disk.unmount)
        disk.mount()
        cleanup.callback(node.stop)
        node.start()
        admin(endpoints.database_url, f'CREATE DATABASE "{database}"')
        cleanup.callback(
            admin, endpoints.database_url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'
        )
        database_url = with_database(endpoints.database_url, database)
        proxies = {
            name: TcpProxy(*target).start()
            for name, target in {
                "broker": ("127.0.0.1", node.port),
                "producer-broker": ("127.0.0.1", node.port),
                "database": endpoints.database_host_port,
            }.items()
        }
        for proxy in proxies.values():
            cleanup.callback(proxy.stop)
        env = {
            "AMQP_URI": amqp_uri_via(node.amqp_uri, proxies["broker"]),
            "QUEUE_NAME": f"lastseen_faults_{RUN_ID}",
            **postgres_env(database_url),
            "POSTGRES_HOST": "127.0.0.1",
            "POSTGRES_PORT": str(proxies["database"].port),
            "SPOOL_PATH": str(disk.mountpoint / "spool.sqlite3"),
            **KNOBS,
        }
        suite = Suite.create(env, base / "suite")
        status_proxy = TcpProxy("127.0.0.1", int(suite.env["TESTER_PORT"])).start()
        cleanup.callback(status_proxy.stop)
        _route(suite, "consumer", TESTER_ENDPOINT=f"http://127.0.0.1:{status_proxy.port}")
        _route(suite, "producer", AMQP_URI=amqp_uri_via(node.amqp_uri, proxies["producer-broker"]))
        cleanup.callback(suite.stop_all)
        suite.start_all()
        faults = FaultsSuite(
            suite,
            proxies["broker"],
            proxies["database"],
            node,
            database_url,
            database,
            KNOBS,
            rows=fault_rows,
            status_proxy=status_proxy,
            producer_broker_proxy=proxies["producer-broker"],
            spool_disk=disk,
            consumer_metrics=[
                f"http://127.0.0.1:{expand(entry.env['METRICS_PORT'], suite.env)}"
                for entry in suite.entries.values()
                if entry.module == "consumer"
            ],
        )
        fault_rows.engines["suite"] = (
            f"private RabbitMQ node, spool on a {SPOOL_DISK_BYTES // 2**20} MiB tmpfs"
        )
        yield faults


def _route(suite: Suite, module: str, **env: str) -> None:
    """Give every process of ``module`` its own value of ``env`` (its own path to a peer)."""
    for name, entry in suite.entries.items():
        if entry.module == module:
            suite.entries[name] = dataclasses.replace(entry, env={**entry.env, **env})


def _keep_logs(workdir: Path) -> None:
    LOGS_PATH.mkdir(parents=True, exist_ok=True)
    for log in workdir.glob("*.log"):
        shutil.copy(log, LOGS_PATH / log.name)


@pytest.fixture
async def faults(faults_suite: FaultsSuite) -> AsyncIterator[FaultsSuite]:
    """The shared suite in a steady state: every link at full speed, the disk free, every
    service running, callbacks answered."""
    faults_suite.status_proxy.shape(None)
    faults_suite.producer_broker_proxy.shape(None)
    faults_suite.producer_broker_proxy.restore()
    faults_suite.spool_disk.free()
    await steady(faults_suite)
    yield faults_suite
