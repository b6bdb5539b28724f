"""Engines partitioned from their peers while the clients still reach them (issue 22, scenarios
1 to 3): the cluster tier's 3 RabbitMQ nodes and its PostgreSQL primary and synchronous standby,
each on a test host of its own (:mod:`tests.support.netns`, :mod:`tests.support.rabbit_netns`,
:mod:`tests.support.pg_netns`).

The node that loses its peers cannot confirm (quorum queues need a majority) and, under
``pause_minority``, pauses within ``net_ticktime`` and closes its clients' connections: callbacks
published there meanwhile go to the spool within the publish timeout, the clients move to a
majority node, and once the partition heals nothing confirmed is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import netns
from tests.support.metrics import total
from tests.support.netns import HostNetwork
from tests.support.pg_netns import NamespacedPgPair
from tests.support.pg_pair import PgPair
from tests.support.rabbit_netns import NET_TICKTIME_S, NamespacedNode, NamespacedRabbitCluster
from tests.support.rabbit_node import PrivateRabbitNode
from tests.support.suite import Suite, expand
from tests.support.waiting import eventually, wait_until

from .harness import KNOBS, LOGS_PATH, AuditedSuite, FaultRows

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]

BROKERS = ["rmq1", "rmq2", "rmq3"]
DATABASES = ["pg1", "pg2"]
DATABASE = "lastseen_partitions"
PRODUCER, CONSUMER = "lastseen-producer", "lastseen-consumer"
PARTITION_S = 20.0  # several net_ticktimes: the pause, the move and load on the majority
# Longer than the consumer's statement timeout (15 s): the writer gives up, holds its acks and
# pauses intake before the link heals.
STANDBY_CUT_S = 20.0
FENCE_AFTER_S = 5.0


@dataclass(kw_only=True)
class PartitionSuite(AuditedSuite):
    network: HostNetwork
    rabbit: NamespacedRabbitCluster
    pg: NamespacedPgPair
    consumer_metrics: list[str]
    failed_over: bool = False  # the standby promoted, the old primary gone: no standby any more


@pytest.fixture(scope="module")
def partitions(fault_rows: FaultRows) -> Iterator[PartitionSuite]:
    why = netns.available() or PrivateRabbitNode.available() or PgPair.available()
    if why:
        pytest.fail(f"the faults tier cannot run here: {why}")
    base = Path(tempfile.mkdtemp(prefix="lastseen-faults-"))
    base.chmod(0o755)  # the nodes run as users rabbitmq and postgres
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, base, ignore_errors=True)
        cleanup.callback(_keep_logs, base)
        network = HostNetwork([*BROKERS, *DATABASES])
        cleanup.callback(network.remove)  # last: it also ends what is left inside the hosts
        network.create()
        rabbit = NamespacedRabbitCluster(base / "rabbit", network, BROKERS)
        cleanup.callback(rabbit.stop_all)
        pg = NamespacedPgPair(base / "pg", *(network.hosts[name] for name in DATABASES))
        cleanup.callback(pg.stop_all)
        pg.start(DATABASE)
        rabbit.start()
        env = {
            "AMQP_URI": rabbit.amqp_uri,
            "QUEUE_NAME": "lastseen_partitions",
            "POSTGRES_HOST": pg.hosts,
            "POSTGRES_PORT": pg.ports,
            "POSTGRES_DB": DATABASE,
            "POSTGRES_USER": "postgres",
            "POSTGRES_PASSWORD": "",
            "SPOOL_PATH": str(base / "spool.sqlite3"),
            **KNOBS,
        }
        suite = Suite.create(env, base / "suite")
        cleanup.callback(suite.stop_all)
        suite.start_all()
        found = PartitionSuite(
            suite,
            None,  # type: ignore[arg-type]  # no broker proxy: the nodes are reached by address
            None,  # type: ignore[arg-type]  # nor a database one: the hosts are
            None,
            # Whichever of the two is the primary: the audit follows the failover.
            f"postgresql://postgres@{','.join(f'{s.host.address}:{s.port}' for s in pg.servers)}"
            f"/{DATABASE}?target_session_attrs=read-write",
            DATABASE,
            KNOBS,
            rows=fault_rows,
            network=network,
            rabbit=rabbit,
            pg=pg,
            consumer_metrics=[
                f"http://127.0.0.1:{expand(entry.env['METRICS_PORT'], suite.env)}"
                for entry in suite.entries.values()
                if entry.module == "consumer"
            ],
        )
        fault_rows.engines["partitions"] = (
            "3 RabbitMQ 3.10 nodes (pause_minority, net_ticktime "
            f"{NET_TICKTIME_S} s) and a PostgreSQL 15 primary with a synchronous standby, each on "
            "a test host of its own (a network namespace)"
        )
        yield found


def _keep_logs(base: Path) -> None:
    LOGS_PATH.mkdir(parents=True, exist_ok=True)
    for log in base.glob("suite/*.log"):
        shutil.copy(log, LOGS_PATH / f"partitions-{log.name}")
    for log in base.glob("rabbit/rmq*/log/*.log"):
        shutil.copy(log, LOGS_PATH / f"{log.parent.parent.name}-{log.name}")
    for log in base.glob("pg/*.log"):
        shutil.copy(log, LOGS_PATH / log.name)


def whole(partitions: PartitionSuite) -> None:
    """Every partition healed, every node in the cluster, the standby synchronous again (unless
    the failover left the promoted standby on its own)."""
    for name in partitions.network.hosts:
        partitions.network.heal(name)
    partitions.rabbit.wait_formed(timeout=90)
    if not partitions.failed_over:
        wait_until(partitions.pg.synchronous, timeout=30, what="standby synchronous")


async def partition_the_node_of(partitions: PartitionSuite, client: str, what: str) -> None:
    whole(partitions)
    nodes = partitions.rabbit.nodes_of(client)
    assert nodes, f"no {client} connection found"
    victim = max(set(nodes), key=nodes.count)
    assert isinstance(victim, NamespacedNode)
    count = len(nodes)
    scenario = await partitions.begin(
        f"broker node of the {what} partitioned",
        f"RabbitMQ {victim.host.name}, which the {what} used, cut off from the other two "
        f"(clients still reach it) for {PARTITION_S:.0f} s, then healed",
    )
    scenario.fault_begins()
    began = time.monotonic()
    partitions.network.partition(victim.host.name)

    async def moved() -> bool:
        found = await asyncio.to_thread(partitions.rabbit.nodes_of, client)
        return len(found) == count and victim not in found

    await eventually(moved, timeout=PARTITION_S, interval=0.5, what=f"every {client} moved")
    moved_s = time.monotonic() - began
    await asyncio.sleep(max(0.0, began + PARTITION_S - time.monotonic()))  # the fault's length
    partitions.network.heal(victim.host.name)
    await asyncio.to_thread(partitions.rabbit.wait_formed, 90)
    scenario.fault_ends()
    spooled = scenario.new_output("producer").count('"callback_spooled"')
    result = await scenario.settle(
        notes=f"every {what.rstrip('s')} connection on a majority node {moved_s:.1f} s after the "
        f"cut; {spooled} callbacks spooled"
    )
    row = partitions.row(result, partitions.ledger_after(scenario.start_seq))
    assert row.passed, row.describe()
    if client == PRODUCER:
        assert spooled > 0, "no callback spooled: the partition did not reach the producer"


async def test_the_producers_node_partitioned(partitions: PartitionSuite) -> None:
    await partition_the_node_of(partitions, PRODUCER, "producers")


async def test_the_consumers_node_partitioned(partitions: PartitionSuite) -> None:
    await partition_the_node_of(partitions, CONSUMER, "consumers")


async def test_the_primary_cut_off_from_its_synchronous_standby(partitions: PartitionSuite) -> None:
    """Then, on the same cut, the documented failover: one test, so that the failover (which
    leaves no standby) comes last whatever order the tests run in."""
    whole(partitions)
    primary = partitions.pg.primary.host.name
    scenario = await partitions.begin(
        "PostgreSQL primary cut off from its standby",
        f"the primary cut off from its synchronous standby (clients still reach it: every "
        f"commit waits) for {STANDBY_CUT_S:.0f} s, then healed",
    )
    scenario.fault_begins()
    began = time.monotonic()
    partitions.network.partition(primary)

    async def paused() -> bool:
        metrics = partitions.consumer_metrics
        return await asyncio.to_thread(total, metrics, "lastseen_consumer_paused") > 0

    await eventually(paused, timeout=STANDBY_CUT_S + 10, interval=0.5, what="intake paused")
    paused_s = time.monotonic() - began
    await asyncio.sleep(max(0.0, began + STANDBY_CUT_S - time.monotonic()))  # the cut's length
    partitions.network.heal(primary)
    await asyncio.to_thread(wait_until, partitions.pg.synchronous, timeout=30, what="standby back")
    scenario.fault_ends()
    result = await scenario.settle(
        notes=f"consumers paused their intake {paused_s:.1f} s after the cut (statement timeout) "
        "and held their acks until the link healed"
    )
    assert "intake_resumed" in scenario.new_output("consumer")
    row = partitions.row(result, partitions.ledger_after(scenario.start_seq))
    assert row.passed, row.describe()
    await fail_over_during_the_cut(partitions)


async def fail_over_during_the_cut(partitions: PartitionSuite) -> None:
    """Commits hang on the cut-off primary; the failover procedure fences it (kill -9) and
    promotes the standby. What the old primary committed locally but never replicated is gone
    with it: the consumers were never told it was stored, so they hold those acks and write the
    rows again on the new primary."""
    pg = partitions.pg
    scenario = await partitions.begin(
        "failover during the standby cut",
        f"the primary cut off from its standby; {FENCE_AFTER_S:.0f} s later (commits waiting) "
        "kill -9 of the primary, then the standby promoted",
    )
    scenario.fault_begins()
    partitions.network.partition(pg.primary.host.name)
    await asyncio.sleep(FENCE_AFTER_S)  # a failover manager's detection time
    pg.primary.kill()
    await asyncio.to_thread(pg.fail_over)
    partitions.failed_over = True
    partitions.network.heal(pg.primary.host.name)
    scenario.fault_ends()
    result = await scenario.settle(notes="the promoted standby left without a standby of its own")
    row = partitions.row(result, partitions.ledger_after(scenario.start_seq))
    assert row.passed, row.describe()
