"""`docker compose -f docker-compose.yml -f docker-compose.pubsub.yml up`, for real: Google's
Pub/Sub emulator instead of RabbitMQ, on the engine and base images of the other compose tests.

One project of the module's own (its own name, volumes and free host ports on 127.0.0.1), brought
up once with the tester's fast pace (tests/compose/fast-tester.yml); the tests run in file order
against it, the last one takes it down with `down -v`.
"""

from __future__ import annotations

import json
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
    FAST_OVERRIDE,
    HOST_PORT_VARIABLES,
    PUBSUB_FILE,
    Engine,
    Project,
    Stopwatch,
    health_summary,
)
from tests.support.ports import free_port
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.compose, pytest.mark.timeout(600)]

SERVICES = {"pubsub-emulator", "db", "producer", "consumer", "routine", "tester"}
UP_WITHIN_S = 180
PROJECT_ID = "lastseen-compose"  # PUBSUB_PROJECT_ID, passed as a user would in the environment
QUEUE = DOTENV["QUEUE_NAME"]
# Ids the tests post themselves, far outside the tester's TESTER_ID_RANGE (1000).
OWN_IDS = [900_000_020, 900_000_021, 900_000_022]


class Up:
    def __init__(self, project: Project, seconds: float) -> None:
        self.project = project
        self.seconds = seconds


@pytest.fixture(scope="module")
def up(engine: Engine, base_images: dict[str, str], pubsub_emulator_image: str) -> Iterator[Up]:
    variables = (*HOST_PORT_VARIABLES, "PUBSUB_EMULATOR_HOST_PORT")
    project = Project(
        engine=engine,
        name=f"lastseen-pubsub-{uuid.uuid4().hex[:8]}",
        ports={variable: free_port() for variable in variables},
        files=(COMPOSE_FILE, PUBSUB_FILE, FAST_OVERRIDE),
        variables={"PUBSUB_PROJECT_ID": PROJECT_ID},
    )
    watch = Stopwatch()
    try:
        wait = ("--wait", "--wait-timeout", str(UP_WITHIN_S))
        project.compose("up", "-d", "--build", *wait, timeout=UP_WITHIN_S + 600)
        yield Up(project, watch.elapsed)
    finally:
        project.down()


def emulator(project: Project, path: str) -> Any:
    """The emulator's REST API on its published port."""
    url = project.url("PUBSUB_EMULATOR_HOST_PORT", f"/v1/projects/{PROJECT_ID}{path}")
    answer = httpx.get(url, timeout=10)
    answer.raise_for_status()
    return answer.json()


def ledger(project: Project, after: int | None = None) -> dict[str, Any]:
    path = "/ledger" if after is None else f"/ledger?after={after}"
    answer = httpx.get(project.url("TESTER_HOST_PORT", path), timeout=10)
    answer.raise_for_status()
    result: dict[str, Any] = answer.json()
    return result


def stored(project: Project) -> dict[int, datetime]:
    rows = project.psql("SELECT id, last_seen FROM object")
    return {int(i): datetime.fromisoformat(t) for i, t in (row.split("|") for row in rows)}


def test_every_service_healthy_and_no_rabbitmq(up: Up) -> None:
    health = health_summary(up.project)
    assert health and set(health.values()) == {"healthy"}, health
    containers = up.project.containers()
    services = {c["Config"]["Labels"]["com.docker.compose.service"] for c in containers}
    assert services == SERVICES
    assert not [c["Name"] for c in containers if "rabbitmq" in c["Config"]["Image"]]
    volumes = up.project.leftovers()["volumes"]
    assert not [v for v in volumes if "rabbitmq" in v], volumes
    assert len(up.project.containers("consumer")) == 2
    assert up.seconds < UP_WITHIN_S, f"up --build --wait took {up.seconds:.0f}s"
    for container in up.project.containers("producer") + up.project.containers("consumer"):
        env = dict(item.split("=", 1) for item in container["Config"]["Env"])
        assert env["BROKER"] == "pubsub" and env["PUBSUB_PROJECT_ID"] == PROJECT_ID
        assert env["PUBSUB_EMULATOR_HOST"] == "pubsub-emulator:8085"
    print(f"pubsub override: up --build --wait in {up.seconds:.1f}s")  # noqa: T201


def test_the_services_made_the_topic_and_subscriptions(up: Up) -> None:
    project = up.project
    topic = emulator(project, f"/topics/{QUEUE}")
    assert topic["name"] == f"projects/{PROJECT_ID}/topics/{QUEUE}"
    work = emulator(project, f"/subscriptions/{QUEUE}.work")
    assert work["topic"] == topic["name"]
    policy = work["deadLetterPolicy"]
    assert policy["deadLetterTopic"] == f"projects/{PROJECT_ID}/topics/{QUEUE}.dead"
    dead = emulator(project, f"/subscriptions/{QUEUE}.dead")
    assert dead["topic"] == policy["deadLetterTopic"]


def test_callbacks_flow_end_to_end_into_postgresql(up: Up) -> None:
    project = up.project
    ready = httpx.get(project.url("PRODUCER_HOST_PORT", "/ready"), timeout=10)
    assert ready.status_code == 200 and ready.json()["ready"] is True, ready.text
    answer = httpx.post(
        project.url("PRODUCER_HOST_PORT", "/callback"), json={"object_ids": OWN_IDS}, timeout=10
    )
    assert answer.status_code == 202 and not answer.json().get("spooled"), answer.text
    online = {i for i in OWN_IDS if i % 2 == 0}
    wait_until(
        lambda: online <= set(stored(project)), timeout=60, interval=0.5, what="own ids stored"
    )
    # The tester's load: at least 25 callbacks, every one 2xx, every online id stored.
    first_seq = ledger(project)["total"]
    wait_until(
        lambda: ledger(project)["total"] >= first_seq + 25, timeout=60, what="25 more callbacks"
    )
    httpx.post(project.url("TESTER_HOST_PORT", "/control"), json={"paused": True}, timeout=10)
    records = ledger(project, after=first_seq)["records"]
    refused = [r for r in records if not r["ok"]]
    assert not refused, f"{len(refused)} of {len(records)} callbacks not 2xx: {refused[:5]}"

    def settled() -> Any:
        result = audit(records, stored(project))
        return result if not result.online_missing and not result.offline_stored else None

    result = wait_until(settled, timeout=90, interval=1, what="ledger audit")
    assert result.online_expected > 0
    assert not {i for i in OWN_IDS if i % 2} & set(stored(project))


def test_the_image_carries_the_pubsub_client(up: Up) -> None:
    (producer,) = up.project.containers("producer")
    version = up.project.engine.docker(
        "exec", producer["Id"], "python", "-c",
        "from importlib.metadata import version; print(version('google-cloud-pubsub'))",
    ).strip()  # fmt: skip
    pinned = [
        line.split("==")[1]
        for line in (COMPOSE_FILE.parent / "constraints.txt").read_text().splitlines()
        if line.startswith("google-cloud-pubsub==")
    ]
    assert [version] == pinned
    image = json.loads(up.project.engine.docker("image", "inspect", "lastseen:latest"))[0]
    assert image["Config"]["User"] == "10001:10001"


def test_down_v_leaves_nothing(up: Up) -> None:
    up.project.compose("down", "-v", "--timeout", "30", timeout=120)
    assert up.project.leftovers() == {"containers": [], "volumes": [], "networks": []}
