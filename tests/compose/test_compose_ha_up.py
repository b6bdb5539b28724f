"""`docker compose -f docker-compose.yml -f docker-compose.ha.yml up`, for real: three RabbitMQ
nodes, HAProxy before two producers, on the engine and base images of the other compose tests.

One project of the module's own, brought up once; the tests run in file order against it (the
tester's fast pace of tests/compose/fast-tester.yml), the last one takes it down with `down -v`.
"""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from tester.audit import audit
from tests.support.compose import (
    COMPOSE_FILE,
    DOTENV,
    FAST_HA_OVERRIDE,
    FAST_OVERRIDE,
    HOST_PORT_VARIABLES,
    Engine,
    Project,
    health_summary,
)
from tests.support.ports import free_port
from tests.support.processes import PROJECT_ROOT
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.compose, pytest.mark.timeout(900)]

HA_FILE = PROJECT_ROOT / "docker-compose.ha.yml"
NODES = ("rabbitmq", "rabbitmq-2", "rabbitmq-3")
SERVICES = {*NODES, "db", "producer", "producer-2", "balancer", "consumer", "routine", "tester"}
UP_WITHIN_S = 300
WORK_QUEUE = DOTENV["QUEUE_NAME"]
# Ids the tests post themselves, far outside the tester's TESTER_ID_RANGE (1000).
OWN_IDS = [900_000_010, 900_000_011]


@pytest.fixture(scope="module")
def ha(engine: Engine, base_images: dict[str, str]) -> Iterator[Project]:
    assert "haproxy:2.9" in base_images, base_images
    variables = (*HOST_PORT_VARIABLES, "BALANCER_HOST_PORT")
    project = Project(
        engine=engine,
        name=f"lastseen-ha-{uuid.uuid4().hex[:8]}",
        ports={variable: free_port() for variable in variables},
        files=(COMPOSE_FILE, HA_FILE, FAST_OVERRIDE, FAST_HA_OVERRIDE),
    )
    try:
        wait = ("--wait", "--wait-timeout", str(UP_WITHIN_S))
        project.compose("up", "-d", "--build", *wait, timeout=UP_WITHIN_S + 600)
        yield project
    finally:
        project.down()


def rabbitmqctl(project: Project, *args: str) -> Any:
    """``rabbitmqctl <args> --formatter json`` on the first broker node that answers."""
    failures = []
    for container in project.containers():
        if container["Config"]["Hostname"] not in NODES or not container["State"]["Running"]:
            continue
        command = ("exec", container["Id"], "rabbitmqctl", *args, "--formatter", "json")
        try:
            return json.loads(project.engine.docker(*command, timeout=60))
        except AssertionError as failure:  # that node is starting or stopping: ask another
            failures.append(str(failure))
    raise AssertionError(f"no broker node answered rabbitmqctl {' '.join(args)}: {failures}")


def queues(project: Project) -> dict[str, dict[str, Any]]:
    rows = rabbitmqctl(project, "list_queues", "name", "type", "leader", "members", "online")
    return {row["name"]: row for row in rows}


def fully_replicated(project: Project) -> dict[str, dict[str, Any]] | None:
    """Every queue, when each is a quorum queue with three members, all online."""
    found = queues(project)
    ready = WORK_QUEUE in found and all(
        q["type"] == "quorum" and len(q["members"]) == len(q["online"]) == len(NODES)
        for q in found.values()
    )
    return found if ready else None


def work_queue_leader(project: Project) -> str:
    """The broker container (its hostname) that leads the work queue."""
    leader = str(queues(project)[WORK_QUEUE]["leader"])
    return leader.removeprefix("rabbit@")


def container_of(project: Project, hostname: str) -> dict[str, Any]:
    (container,) = [c for c in project.containers() if c["Config"]["Hostname"] == hostname]
    return container


def ledger(project: Project, after: int | None = None) -> dict[str, Any]:
    path = "/ledger" if after is None else f"/ledger?after={after}"
    answer = httpx.get(project.url("TESTER_HOST_PORT", path), timeout=10)
    answer.raise_for_status()
    result: dict[str, Any] = answer.json()
    return result


def stored(project: Project) -> dict[int, datetime]:
    rows = project.psql("SELECT id, last_seen FROM object")
    return {int(i): datetime.fromisoformat(t) for i, t in (row.split("|") for row in rows)}


def crash_and_wait_for_recovery(project: Project, container: dict[str, Any]) -> None:
    """kill -9 of the container's main process from the host, as the OOM killer does it (`docker
    kill` would count as a manual stop, never restarted); then the restart policy's restart, every
    container healthy and every queue replicated on three online nodes again."""
    os.kill(container["State"]["Pid"], signal.SIGKILL)

    def restarted() -> bool:
        (again,) = json.loads(project.engine.docker("inspect", container["Id"]))
        return bool(again["RestartCount"] > container["RestartCount"] and again["State"]["Running"])

    wait_until(restarted, timeout=60, interval=0.5, what=f"{container['Name']} restarted")
    wait_until(project.all_healthy, timeout=180, interval=1, what="every container healthy again")
    wait_until(lambda: fully_replicated(project), timeout=120, interval=2, what="3 online members")


def more_callbacks(project: Project, count: int) -> None:
    """Wait until the tester has recorded ``count`` more callbacks: the load goes on."""
    start = ledger(project)["total"]
    wait_until(
        lambda: ledger(project)["total"] >= start + count,
        timeout=60,
        interval=0.5,
        what=f"{count} more callbacks",
    )


def test_every_container_healthy_after_up_build_wait(ha: Project) -> None:
    health = health_summary(ha)
    assert health and set(health.values()) == {"healthy"}, health
    services = {c["Config"]["Labels"]["com.docker.compose.service"] for c in ha.containers()}
    assert services == SERVICES
    assert len(ha.containers("consumer")) == len(ha.containers("routine")) == 2
    (balancer,) = ha.containers("balancer")
    (binding,) = balancer["HostConfig"]["PortBindings"]["9090/tcp"]
    assert binding == {"HostIp": "127.0.0.1", "HostPort": str(ha.ports["BALANCER_HOST_PORT"])}


def test_the_three_broker_nodes_form_one_cluster(ha: Project) -> None:
    expected = sorted(f"rabbit@{node}" for node in NODES)
    for node in NODES:
        command = ("exec", container_of(ha, node)["Id"], "rabbitmqctl", "cluster_status")
        status = json.loads(ha.engine.docker(*command, "--formatter", "json", timeout=60))
        assert sorted(status["running_nodes"]) == expected, (node, status)
        assert sorted(status["disk_nodes"]) == expected, (node, status)


def test_every_queue_is_a_quorum_queue_with_three_members(ha: Project) -> None:
    found = wait_until(
        lambda: fully_replicated(ha), timeout=120, interval=2, what="every queue on 3 nodes"
    )
    assert found is not None
    assert found[WORK_QUEUE]["leader"] in {f"rabbit@{node}" for node in NODES}


def test_a_callback_through_the_balancer_is_stored_and_garbage_is_refused(ha: Project) -> None:
    callback = ha.url("BALANCER_HOST_PORT", "/callback")
    answer = httpx.post(callback, json={"object_ids": OWN_IDS}, timeout=10)
    assert answer.status_code == 202, answer.text
    online = {i for i in OWN_IDS if i % 2 == 0}
    wait_until(lambda: online <= set(stored(ha)), timeout=60, interval=0.5, what="own ids stored")
    assert not {i for i in OWN_IDS if i % 2} & set(stored(ha))
    # The balancer passes the producer's refusal on (no retry of an answered request).
    headers = {"Content-Type": "application/json"}
    garbage = httpx.post(callback, content=b"{not json", headers=headers, timeout=10)
    assert garbage.status_code == 400 and garbage.json()["error"] == "invalid_json", garbage.text


def test_killed_leader_producer_and_new_leader_under_load_lose_no_callback(ha: Project) -> None:
    first_seq = ledger(ha)["total"]
    more_callbacks(ha, 10)

    first_leader = work_queue_leader(ha)
    crash_and_wait_for_recovery(ha, container_of(ha, first_leader))
    new_leader = work_queue_leader(ha)
    assert new_leader != first_leader, "the killed leader's queue got no new leader"
    more_callbacks(ha, 10)

    (producer,) = ha.containers("producer")
    crash_and_wait_for_recovery(ha, producer)
    more_callbacks(ha, 10)

    assert work_queue_leader(ha) == new_leader
    crash_and_wait_for_recovery(ha, container_of(ha, new_leader))
    more_callbacks(ha, 25)

    httpx.post(ha.url("TESTER_HOST_PORT", "/control"), json={"paused": True}, timeout=10)
    records = ledger(ha, after=first_seq)["records"]
    refused = [r for r in records if not r["ok"]]
    assert not refused, f"{len(refused)} of {len(records)} callbacks not 2xx: {refused[:5]}"

    def settled() -> Any:
        result = audit(records, stored(ha))
        return result if not result.online_missing and not result.offline_stored else None

    result = wait_until(settled, timeout=90, interval=1, what="ledger audit")
    assert result.online_expected > 0
    health = health_summary(ha)
    assert set(health.values()) == {"healthy"}, health


def test_down_v_leaves_nothing(ha: Project) -> None:
    ha.compose("down", "-v", "--timeout", "30", timeout=120)
    assert ha.leftovers() == {"containers": [], "volumes": [], "networks": []}
