"""`docker compose up`, for real: the project's docker-compose.yml and Dockerfile on a real engine.

One project of the module's own (its own name, volumes and free host ports on 127.0.0.1), brought
up once; the tests run in file order against it, the last one takes it down. The only override
(tests/compose/fast-tester.yml) makes the tester send every 200 ms and the routine keep rows.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from common.open_files import OTHER_DESCRIPTORS
from tester.audit import audit
from tests.support.compose import (
    COMPOSE_FILE,
    DOTENV,
    Engine,
    Project,
    Stopwatch,
    health_summary,
    run,
)
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.compose, pytest.mark.timeout(600)]

APP_SERVICES = ("producer", "consumer", "routine", "tester")
UP_WITHIN_S = 180  # the bound: every service healthy within 3 minutes of a warm cache
# Ids the tests post themselves, far outside the tester's TESTER_ID_RANGE (1000).
SPOOLED_IDS = [900_000_002, 900_000_004, 900_000_005]


class Up:
    def __init__(self, project: Project, seconds: float, images: dict[str, str]) -> None:
        self.project = project
        self.seconds = seconds
        self.images = images


@pytest.fixture(scope="module")
def up(engine: Engine, base_images: dict[str, str]) -> Iterator[Up]:
    project = Project.create(engine, f"lastseen-test-{uuid.uuid4().hex[:8]}")
    watch = Stopwatch()
    try:
        project.compose("up", "-d", "--build", "--wait", "--wait-timeout", str(UP_WITHIN_S))
        yield Up(project, watch.elapsed, base_images)
    finally:
        project.down()


def call_tester(project: Project, method: str, path: str, **kwargs: Any) -> Any:
    answer = httpx.request(method, project.url("TESTER_HOST_PORT", path), timeout=10, **kwargs)
    answer.raise_for_status()
    return answer.json()


def stored(project: Project) -> dict[int, datetime]:
    rows = project.psql("SELECT id, last_seen FROM object")
    return {int(i): datetime.fromisoformat(t) for i, t in (row.split("|") for row in rows)}


def queue(project: Project) -> dict[str, Any]:
    result: dict[str, Any] = project.management(f"/queues/%2F/{DOTENV['QUEUE_NAME']}")
    return result


def test_every_service_healthy_after_up_build_wait(up: Up) -> None:
    health = health_summary(up.project)
    assert health and set(health.values()) == {"healthy"}, health
    services = {
        c["Config"]["Labels"]["com.docker.compose.service"] for c in up.project.containers()
    }
    assert services == {"rabbitmq", "db", *APP_SERVICES}
    assert len(up.project.containers("consumer")) == 2
    assert up.seconds < UP_WITHIN_S, f"up --build --wait took {up.seconds:.0f}s"
    for container in up.project.containers():
        for binding in (container["HostConfig"]["PortBindings"] or {}).values():
            assert all(b["HostIp"] == "127.0.0.1" for b in binding), binding


def test_callbacks_become_rows_and_every_endpoint_answers(up: Up) -> None:
    project = up.project
    rows = wait_until(lambda: stored(project), timeout=60, interval=0.5, what="rows in object")
    assert all(object_id % 2 == 0 for object_id in rows), "an offline id was stored"
    work = queue(project)
    assert work["type"] == "quorum" and work["durable"]
    assert project.management("/whoami")["name"] == DOTENV["RABBITMQ_DEFAULT_USER"]
    docs = httpx.get(project.url("PRODUCER_HOST_PORT", "/docs"), timeout=10)
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    ready = httpx.get(project.url("PRODUCER_HOST_PORT", "/ready"), timeout=10)
    assert ready.status_code == 200 and ready.json()["ready"] is True


def test_four_consumers_share_the_queue_after_scale(up: Up) -> None:
    project = up.project
    project.compose("up", "-d", "--wait", "--scale", "consumer=4", timeout=240)
    assert len(project.containers("consumer")) == 4

    def consuming_hosts() -> set[str] | None:
        details = queue(project).get("consumer_details", [])
        hosts = {d["channel_details"]["peer_host"] for d in details}
        return hosts if len(hosts) == 4 else None

    hosts = wait_until(consuming_hosts, timeout=60, interval=0.5, what="4 consuming containers")
    assert len(hosts) == 4


def test_a_killed_consumer_and_a_restarted_broker_lose_no_callback(up: Up) -> None:
    project = up.project
    first_seq = call_tester(project, "GET", "/ledger")["total"]
    victim = project.containers("consumer")[0]
    # A crash, as the kernel's OOM killer does it: SIGKILL to the container's process from the host.
    # (`docker kill` counts as a manual stop, which the unless-stopped policy never restarts.)
    os.kill(victim["State"]["Pid"], signal.SIGKILL)

    def restarted() -> bool:
        (again,) = json.loads(project.engine.docker("inspect", victim["Id"]))
        return bool(again["RestartCount"] > victim["RestartCount"] and again["State"]["Running"])

    wait_until(restarted, timeout=60, interval=0.5, what="the killed consumer restarted")
    project.compose("restart", "rabbitmq", timeout=120)
    wait_until(project.all_healthy, timeout=120, interval=1, what="every service healthy again")
    # Load goes on after the restart: at least 25 more callbacks, then the tester pauses.
    after_restart = call_tester(project, "GET", "/ledger")["total"]
    wait_until(
        lambda: call_tester(project, "GET", "/ledger")["total"] >= after_restart + 25,
        timeout=60,
        what="callbacks after the broker restart",
    )
    call_tester(project, "POST", "/control", json={"paused": True})
    records = call_tester(project, "GET", f"/ledger?after={first_seq}")["records"]
    assert sum(1 for r in records if r["ok"]) >= 25

    def settled() -> Any:
        result = audit(records, stored(project))
        return result if not result.online_missing and not result.offline_stored else None

    result = wait_until(settled, timeout=90, interval=1, what="ledger audit")
    assert result.online_expected > 0


def test_the_image_runs_as_its_non_root_user_and_is_healthy(up: Up) -> None:
    project = up.project
    image = json.loads(project.engine.docker("image", "inspect", "lastseen:latest"))[0]
    assert image["Config"]["User"] == "10001:10001"
    assert image["Config"]["Healthcheck"]["Test"][0] == "CMD"
    for service in APP_SERVICES:
        for container in project.containers(service):
            assert container["State"]["Health"]["Status"] == "healthy", container["Name"]
            ids = project.engine.docker("exec", container["Id"], "id").strip()
            assert ids.startswith("uid=10001(lastseen) gid=10001(lastseen)"), (
                container["Name"],
                ids,
            )
            pid1 = project.engine.docker("exec", container["Id"], "cat", "/proc/1/cmdline")
            assert pid1.split("\0")[:3] == ["python", "-m", service], pid1
            if service == "consumer":  # the consumer's soft limit covers MAX_CONSUMERS
                limits = project.engine.docker("exec", container["Id"], "cat", "/proc/1/limits")
                [row] = [row for row in limits.splitlines() if row.startswith("Max open files")]
                env = dict(item.split("=", 1) for item in container["Config"]["Env"])
                needed = int(env["MAX_CONSUMERS"]) + 10 + OTHER_DESCRIPTORS  # pool: default
                assert int(row.split()[3]) >= needed, row


def test_stop_exits_zero_and_start_keeps_data_and_spool(up: Up) -> None:
    project = up.project
    call_tester(project, "POST", "/control", json={"paused": True})
    before = stored(project)
    assert before
    # With the broker away the producer spools: those ids exist only in the spool volume.
    project.compose("stop", "rabbitmq", timeout=60)
    answer = httpx.post(
        project.url("PRODUCER_HOST_PORT", "/callback"), json={"object_ids": SPOOLED_IDS}, timeout=10
    )
    assert answer.status_code == 202 and answer.json()["spooled"] is True, answer.text
    ready = httpx.get(project.url("PRODUCER_HOST_PORT", "/ready"), timeout=10).json()
    assert ready["spool_depth"] >= 1

    watch = Stopwatch()
    project.compose("stop", timeout=120)
    assert watch.elapsed < 60, f"stop took {watch.elapsed:.0f}s"
    exits = {
        c["Name"]: (c["State"]["Status"], c["State"]["ExitCode"]) for c in project.containers()
    }
    assert set(exits.values()) == {("exited", 0)}, exits

    project.compose("start", timeout=240)
    wait_until(project.all_healthy, timeout=180, interval=1, what="every service healthy again")
    after = stored(project)
    assert set(before) <= set(after), "rows lost across stop/start"
    online = {i for i in SPOOLED_IDS if i % 2 == 0}
    wait_until(
        lambda: online <= set(stored(project)), timeout=90, interval=1, what="spooled ids stored"
    )
    assert not {i for i in SPOOLED_IDS if i % 2} & set(stored(project))


def test_down_v_leaves_nothing(up: Up) -> None:
    project = up.project
    project.compose("down", "-v", "--timeout", "30", timeout=120)
    assert project.leftovers() == {"containers": [], "volumes": [], "networks": []}


def test_a_variable_missing_from_dotenv_stops_compose_at_once(
    engine: Engine, tmp_path: Path
) -> None:
    copy = tmp_path / "lastseen"
    copy.mkdir()
    shutil.copy(COMPOSE_FILE, copy / "docker-compose.yml")
    lines = (COMPOSE_FILE.parent / ".env").read_text().splitlines()
    (copy / ".env").write_text(
        "\n".join(line for line in lines if not line.startswith("POSTGRES_PASSWORD=")) + "\n"
    )
    env = {**engine.env, "POSTGRES_PASSWORD": ""}
    name = f"lastseen-test-{uuid.uuid4().hex[:8]}"
    result = run(
        ["docker", "compose", "-p", name, "up", "-d"], env, cwd=copy, timeout=60, check=False
    )
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr and ".env" in result.stderr, result.stderr
    assert not engine.docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={name}")
