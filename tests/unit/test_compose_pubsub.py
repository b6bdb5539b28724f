"""docker-compose.pubsub.yml and the image's Pub/Sub client, read from the files (no engine; the
compose tier runs them: tests/compose/test_compose_files.py, test_compose_pubsub_up.py)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from typing import Any

import pytest

from common.broker.pubsub_topology import parse_emulator_host, parse_project_id
from tests.support.compose import PUBSUB_EMULATOR_IMAGE
from tests.support.compose_files import load_compose
from tests.support.processes import PROJECT_ROOT as ROOT

pytestmark = pytest.mark.unit

BASE = load_compose("docker-compose.yml")["services"]
PUBSUB = load_compose("docker-compose.pubsub.yml")["services"]
EMULATOR = PUBSUB["pubsub-emulator"]
BROKER_CLIENTS = ("producer", "consumer")
DEFAULT = re.compile(r"\$\{(\w+):-([^}]*)\}")


def resolved(value: str) -> str:
    """``value`` with each ``${NAME:-default}`` at its default."""
    return DEFAULT.sub(lambda m: m.group(2), value)


def overridden(spec: dict[str, Any]) -> dict[str, Any]:
    tagged = spec["depends_on"]
    assert tagged["__tag__"] == "override", "!override: a plain mapping would add to RabbitMQ's"
    value: dict[str, Any] = tagged["value"]
    return value


def test_rabbitmq_is_left_out_and_nothing_waits_for_it() -> None:
    assert PUBSUB["rabbitmq"] == {"profiles": ["rabbitmq"]}
    for name in BROKER_CLIENTS:
        assert "rabbitmq" in BASE[name]["depends_on"], "the base file changed: check the override"
        depends = overridden(PUBSUB[name])
        # The base's other dependencies stay (the same conditions), the emulator replaces RabbitMQ.
        expected = {k: v for k, v in BASE[name]["depends_on"].items() if k != "rabbitmq"}
        expected["pubsub-emulator"] = {"condition": "service_healthy"}
        assert depends == expected, name
    for name, spec in PUBSUB.items():
        if name not in BROKER_CLIENTS:
            assert "depends_on" not in spec, f"{name}: merged with the base's, check it"


def test_the_services_use_the_emulator_by_its_service_name_and_port() -> None:
    command = [resolved(str(argument)) for argument in EMULATOR["command"]]
    assert command[:5] == ["gcloud", "beta", "emulators", "pubsub", "start"]
    options = dict(argument.removeprefix("--").split("=", 1) for argument in command[5:])
    host_port = options["host-port"]
    assert host_port.startswith("0.0.0.0:"), "reachable from the other containers"
    port = host_port.rpartition(":")[2]
    assert EMULATOR["ports"] == [f"${{PUBSUB_EMULATOR_HOST_PORT:-127.0.0.1:{port}}}:{port}"]
    assert EMULATOR["healthcheck"]["test"] == ["CMD", "curl", "-fsS", f"http://127.0.0.1:{port}/"]
    for name in BROKER_CLIENTS:
        env = {key: resolved(str(value)) for key, value in PUBSUB[name]["environment"].items()}
        assert env["BROKER"] == "pubsub", name
        assert env["AMQP_URI"] == "", f"{name}: .env's RabbitMQ URI must not reach it"
        assert parse_emulator_host(env["PUBSUB_EMULATOR_HOST"]) == f"pubsub-emulator:{port}"
        assert parse_project_id(env["PUBSUB_PROJECT_ID"]) == options["project"], name


def test_the_emulator_is_hardened_and_its_image_is_the_stand_ins() -> None:
    assert EMULATOR["cap_drop"] == ["ALL"]
    assert EMULATOR["security_opt"] == ["no-new-privileges:true"]
    assert "cap_add" not in EMULATOR and EMULATOR["restart"] == "unless-stopped"
    assert EMULATOR["image"] == PUBSUB_EMULATOR_IMAGE
    images = ROOT / "tests" / "compose" / "images"
    label = f'LABEL org.lastseen.standin="{PUBSUB_EMULATOR_IMAGE}"'
    assert label in (images / "pubsub-emulator" / "Dockerfile").read_text()
    assert (
        f"ensure_image {PUBSUB_EMULATOR_IMAGE} pubsub-emulator" in (images / "ensure").read_text()
    )


def test_the_image_installs_the_pubsub_extra() -> None:
    """The Dockerfile's own requirements step, run here: the base dependencies and the pubsub
    extra, whose versions constraints.txt pins."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    [line] = [line for line in dockerfile.splitlines() if "> requirements.txt" in line]
    command = shlex.split(line.removeprefix("RUN ").partition(" > requirements.txt")[0])
    assert command[:2] == ["python", "-c"]
    listed = subprocess.run(
        [sys.executable, "-c", command[2]], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert any(line.startswith("google-cloud-pubsub") for line in listed), listed
    assert any(line.startswith("aio-pika") for line in listed), listed
    assert "google-cloud-pubsub==" in (ROOT / "constraints.txt").read_text()
