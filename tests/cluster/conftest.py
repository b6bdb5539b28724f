"""One suite for every cluster scenario, started once per module on engines of its own:
3 RabbitMQ nodes, a PostgreSQL primary and synchronous standby, HAProxy before two producers."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.haproxy import HaProxy
from tests.support.pg_pair import PgPair
from tests.support.ports import free_port
from tests.support.processes import PROJECT_ROOT
from tests.support.producer import ready_state
from tests.support.rabbit_cluster import RabbitCluster
from tests.support.rabbit_node import PrivateRabbitNode
from tests.support.suite import ProcfileEntry, Suite
from tests.support.waiting import wait_until

from .harness import DATABASE, QUEUE, ClusterSuite, now, write_results

LOGS_PATH = PROJECT_ROOT / "var" / "cluster-logs"

# The tester's real status delays (0.3-4.3 s) at 20+ callbacks/s of up to 30 ids from 0..999:
# 300+ ids/s. The tester sends one callback at a time and drops ticks a send outlasted, so the
# interval is below 50 ms to keep 20 callbacks/s while answers take tens of milliseconds. TTL long
# so that expiry never confuses the audit (the expiry gets a check of its own after the database
# failover).
KNOBS = {
    "TESTER_INTERVAL": "25ms",
    "TESTER_ID_RANGE": "1000",
    "TESTER_MAX_IDS": "30",
    "TESTER_LEDGER_SIZE": "200000",
    "CONSUMER_MAX_CONSUMERS": "1000",
    "OBJECT_TTL": "1h",
    "ROUTINE_INTERVAL": "500ms",
    "ROUTINE_MAX_BACKOFF": "1s",
    "RETRY_BASE_DELAY": "250ms",
    "RETRY_MAX_DELAY": "2s",
    "RELAY_PUBLISH_TIMEOUT": "1s",
    "BROKER_MAX_BACKOFF": "1s",
    "SHUTDOWN_GRACE": "5s",
    "WATCHDOG_INTERVAL": "5s",
    "STARTUP_TIMEOUT": "60s",
    "LOG_LEVEL": "info",
}


def _wait_producer(port: int) -> None:
    wait_until(
        lambda: (ready_state(port) or {}).get("broker") == "connected",
        timeout=30,
        what=f"producer on {port} connected to the broker",
    )


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterSuite]:
    why = PrivateRabbitNode.available() or PgPair.available()
    if why:
        pytest.fail(f"the cluster tier cannot run here: {why}")
    HaProxy.ensure_installed()
    started_at = now()
    # Not pytest's tmp_path: its parents are 0700, and the nodes run as rabbitmq and postgres.
    base = Path(tempfile.mkdtemp(prefix="lastseen-cluster-"))
    base.chmod(0o755)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, base, ignore_errors=True)
        cleanup.callback(_keep_logs, base)
        rabbit = RabbitCluster(base / "rabbit")
        cleanup.callback(rabbit.stop_all)
        rabbit.start()
        pg = PgPair(base / "pg")
        cleanup.callback(pg.stop_all)
        pg.start(DATABASE)
        env = {
            "AMQP_URI": rabbit.amqp_uri,
            "QUEUE_NAME": QUEUE,
            "POSTGRES_HOST": pg.hosts,
            "POSTGRES_PORT": pg.ports,
            "POSTGRES_DB": DATABASE,
            "POSTGRES_USER": "postgres",
            "POSTGRES_PASSWORD": "",
            **KNOBS,
        }
        suite = Suite.create(env, base / "suite")
        cleanup.callback(suite.stop_all)
        first_port, second_port = int(suite.env["PRODUCER_PORT"]), free_port()
        suite.entries["producer_2"] = ProcfileEntry(
            "producer_2",
            "producer",
            {"PRODUCER_PORT": str(second_port), "SPOOL_PATH": str(base / "suite" / "spool-2")},
        )
        servers = [("producer_1", first_port), ("producer_2", second_port)]
        balancer = HaProxy(base / "haproxy", servers)
        cleanup.callback(balancer.stop)
        balancer.start()
        suite.env["CALLBACK_ENDPOINT"] = balancer.url
        for name, port in (("producer", first_port), ("producer_2", second_port)):
            suite.start(name)
            _wait_producer(port)
        wait_until(
            lambda: balancer.server_up("producer_1") and balancer.server_up("producer_2"),
            timeout=15,
            what="both producers up in HAProxy",
        )
        for name in ("consumer_1", "consumer_2", "routine", "tester"):
            suite.start(name)
            suite.wait_ready(name)
        audit_dsn = (
            f"postgresql://postgres@{','.join(f'127.0.0.1:{s.port}' for s in pg.servers)}"
            f"/{DATABASE}?target_session_attrs=read-write"
        )
        found = ClusterSuite(
            suite, rabbit, pg, balancer, audit_dsn, QUEUE, KNOBS, started_at=started_at
        )
        yield found
        if found.results:
            write_results(found)


def _keep_logs(base: Path) -> None:
    """Service, HAProxy, PostgreSQL and RabbitMQ logs outlive the run, for whoever has to explain
    a failed scenario."""
    shutil.rmtree(LOGS_PATH, ignore_errors=True)
    LOGS_PATH.mkdir(parents=True, exist_ok=True)
    for pattern in ("suite/*.log", "haproxy/*.log", "pg/*.log", "rabbit/node*/log/*.log"):
        for log in base.glob(pattern):
            target = LOGS_PATH / f"{log.parent.name}-{log.name}"
            shutil.copy(log, target)
