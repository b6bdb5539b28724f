"""No single node, under load at the tester's real 0.3-4.3 s delays: kill -9 a broker node (the
producers', the consumers', the work queue's leader), a rolling restart of all three, kill -9 of
the PostgreSQL primary with its standby promoted, kill -9 of one of two producers behind HAProxy.

Each fault: every callback answered 2xx within 1 s, no online id lost, no offline id stored, the
backlog gone within 15 s of the fault's end, every service still running — none restarted.
Run in order on one suite (the fixture's); each test first brings every broker node back.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

import asyncpg
import pytest

from common.amqp import Topology
from tests.support.producer import ready_state
from tests.support.rabbit_cluster import ClusterNode
from tests.support.waiting import eventually, wait_until

from .harness import DATABASE, ClusterSuite, FaultResult

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(180)]

PRODUCER, CONSUMER = "lastseen-producer", "lastseen-consumer"
STALE_ID = 10**12  # outside the tester's ids: only the expiry touches it


def _short(node: ClusterNode) -> str:
    """``node 2`` for ``lastseen_cluster_ab12cd_2@localhost``."""
    return "node " + node.name.split("@", 1)[0].rsplit("_", 1)[-1]


def _whole(cluster: ClusterSuite) -> None:
    """Every broker node up and in the cluster."""
    for node in cluster.rabbit.nodes:
        if not node.running():
            cluster.rabbit.restart(node)
    cluster.rabbit.wait_formed()


def _busiest(nodes: list[ClusterNode]) -> ClusterNode:
    assert nodes, "no client connection found"
    return Counter(nodes).most_common(1)[0][0]


async def _moved_off(cluster: ClusterSuite, victim: ClusterNode, name: str, count: int) -> None:
    async def moved() -> bool:
        nodes = cluster.rabbit.nodes_of(name)
        return len(nodes) == count and victim not in nodes

    await eventually(moved, timeout=20, interval=0.5, what=f"every {name} on another node")


MIN_IDS_PER_S = 200  # the load floor, at the real 0.3-4.3 s status delays


def _assert_passed(result: FaultResult) -> None:
    assert result.passed, result.describe()
    assert result.ids_per_s >= MIN_IDS_PER_S, result.describe()


def test_quorum_queues_replicate_over_three_nodes(cluster: ClusterSuite) -> None:
    topology = Topology(cluster.queue)
    queues = {entry["name"]: entry for entry in cluster.rabbit.queues()}
    names = {node.name for node in cluster.rabbit.nodes}
    for name in (topology.work, topology.dead):
        assert set(queues[name]["members"]) == names, queues[name]
    retries = [entry for name, entry in queues.items() if name.startswith(f"{topology.work}.retry")]
    assert retries and all(set(entry["members"]) == names for entry in retries)


async def test_kill_9_the_producers_node(cluster: ClusterSuite) -> None:
    _whole(cluster)
    victim = _busiest(cluster.rabbit.nodes_of(PRODUCER))
    fault = await cluster.begin(
        "broker node of the producers",
        f"kill -9 of RabbitMQ {_short(victim)}, which the producers published to",
    )
    fault.begins()
    victim.kill()
    fault.ends()
    await _moved_off(cluster, victim, PRODUCER, 2)
    result = await fault.settle(notes="killed node left down until the scenario ended")
    cluster.rabbit.restart(victim)
    _assert_passed(result)


async def test_kill_9_the_consumers_node(cluster: ClusterSuite) -> None:
    _whole(cluster)
    victim = _busiest(cluster.rabbit.nodes_of(CONSUMER))
    fault = await cluster.begin(
        "broker node of the consumers",
        f"kill -9 of RabbitMQ {_short(victim)}, which the consumers consumed from",
    )
    fault.begins()
    victim.kill()
    fault.ends()
    await _moved_off(cluster, victim, CONSUMER, 2)
    result = await fault.settle(notes="unacked deliveries came back from the other nodes")
    cluster.rabbit.restart(victim)
    _assert_passed(result)


async def test_kill_9_the_work_queue_leader(cluster: ClusterSuite) -> None:
    _whole(cluster)
    victim = cluster.rabbit.leader_of(cluster.queue)
    fault = await cluster.begin(
        "work queue leader", f"kill -9 of RabbitMQ {_short(victim)}, leader of the work queue"
    )
    fault.begins()
    victim.kill()
    fault.ends()
    new_leader = await eventually(
        lambda: _leader_other_than(cluster, victim), timeout=20, what="a new leader"
    )
    result = await fault.settle(notes=f"new leader: {_short(new_leader)}")
    cluster.rabbit.restart(victim)
    _assert_passed(result)


def _leader_other_than(cluster: ClusterSuite, old: ClusterNode) -> ClusterNode | None:
    try:
        leader = cluster.rabbit.leader_of(cluster.queue)
    except (LookupError, StopIteration):
        return None
    return leader if leader is not old else None


async def test_rolling_restart_of_all_three_nodes(cluster: ClusterSuite) -> None:
    _whole(cluster)
    fault = await cluster.begin(
        "rolling restart", "each RabbitMQ node in turn: stopped, started, rejoined"
    )
    fault.begins()
    for node in cluster.rabbit.nodes:
        await asyncio.to_thread(node.stop)
        await asyncio.to_thread(cluster.rabbit.restart, node)
    fault.ends()
    result = await fault.settle()
    _assert_passed(result)


async def test_postgres_primary_killed_standby_promoted(cluster: ClusterSuite) -> None:
    pg = cluster.pg
    fault = await cluster.begin(
        "PostgreSQL primary",
        "kill -9 of the primary (postmaster and backends); 2 s later the synchronous standby "
        "is promoted and its synchronous_standby_names cleared",
    )
    fault.begins()
    pg.primary.kill()
    # a failover manager's detection time: the consumers hold their acks meanwhile
    await asyncio.sleep(2)
    pg.fail_over()
    fault.ends()
    result = await fault.settle()
    expiry_s = await _expiry_on_the_new_primary(cluster)
    result.notes = f"the routine expired a stale row on the new primary in {expiry_s:.1f} s"
    cluster.record(result)
    _assert_passed(result)
    # ROUTINE_INTERVAL 500 ms, ROUTINE_MAX_BACKOFF 1 s: the expiry keeps its bound
    assert expiry_s < 3.0


async def _expiry_on_the_new_primary(cluster: ClusterSuite) -> float:
    connection = await asyncpg.connect(cluster.pg.standby.url(DATABASE))
    try:
        await connection.execute(
            "INSERT INTO object (id, last_seen) VALUES ($1, now() - $2::interval)",
            STALE_ID,
            timedelta(hours=2),
        )
        started = asyncio.get_running_loop().time()

        async def expired() -> bool:
            left = await connection.fetchval("SELECT count(*) FROM object WHERE id = $1", STALE_ID)
            return bool(left == 0)

        await eventually(expired, timeout=10, interval=0.05, what="stale row expired")
        return asyncio.get_running_loop().time() - started
    finally:
        await connection.close()


async def test_one_of_two_producers_killed_behind_haproxy(cluster: ClusterSuite) -> None:
    suite, balancer = cluster.suite, cluster.balancer
    fault = await cluster.begin(
        "producer replica",
        "kill -9 of one of two producers behind HAProxy at 20 callbacks/s; started again 3 s later",
    )
    fault.begins()
    suite.kill("producer")
    await eventually(
        lambda: not balancer.server_up("producer_1"), timeout=10, what="HAProxy marks it down"
    )
    await asyncio.sleep(3)  # the outage: one producer serves alone
    suite.start("producer")
    port = int(suite.env["PRODUCER_PORT"])
    await eventually(
        lambda: (ready_state(port) or {}).get("broker") == "connected",
        timeout=30,
        what="producer back",
    )
    await eventually(lambda: balancer.server_up("producer_1"), timeout=10, what="back in HAProxy")
    fault.ends()
    sessions = balancer.sessions("producer_1")
    result = await fault.settle()
    # it takes traffic again
    wait_until(lambda: balancer.sessions("producer_1") >= sessions + 10, timeout=10, what="traffic")
    retried = sum(
        int(row["wretr"] or 0) + int(row["wredis"] or 0) for row in balancer.stats().values()
    )
    result.notes = f"HAProxy retries/redispatches so far: {retried}"
    cluster.record(result)
    _assert_passed(result)
    assert result.callbacks_per_s >= 20, result.describe()
