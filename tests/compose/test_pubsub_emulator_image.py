"""The Pub/Sub emulator's image (official or the stand-in of tests/compose/images/pubsub-emulator)
run exactly as docker-compose.pubsub.yml runs it: its command and health check as Compose
resolves them, hardened as the file hardens it. It serves Pub/Sub on the published port (a topic,
a subscription, a message published and pulled back), its health check passes inside it, and it
stops promptly on the stop signal.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import uuid
from typing import Any

import httpx
import pytest

from tests.support.compose import PUBSUB_EMULATOR_IMAGE, Engine, Stopwatch
from tests.support.ports import free_port
from tests.support.processes import PROJECT_ROOT
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.compose, pytest.mark.timeout(300)]


def emulator_service(engine: Engine) -> dict[str, Any]:
    """The pubsub-emulator service of docker-compose.yml + docker-compose.pubsub.yml, resolved."""
    result = subprocess.run(
        [
            "docker", "compose", "-f", "docker-compose.yml", "-f", "docker-compose.pubsub.yml",
            "config", "--format", "json",
        ],
        cwd=PROJECT_ROOT,
        env={**os.environ, **engine.env},
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    service: dict[str, Any] = json.loads(result.stdout)["services"]["pubsub-emulator"]
    return service


def test_the_emulator_image_serves_pubsub_as_the_override_runs_it(
    engine: Engine, pubsub_emulator_image: str
) -> None:
    service = emulator_service(engine)
    assert service["image"] == PUBSUB_EMULATOR_IMAGE
    project = next(a for a in service["command"] if a.startswith("--project="))
    project = project.removeprefix("--project=")
    port = free_port()
    name = f"lastseen-pubsub-image-{uuid.uuid4().hex[:8]}"
    hardening = [f"--cap-drop={c}" for c in service["cap_drop"]]
    hardening += [f"--security-opt={o}" for o in service["security_opt"]]
    watch = Stopwatch()
    engine.docker(
        "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8085", *hardening,
        PUBSUB_EMULATOR_IMAGE, *service["command"],
    )  # fmt: skip
    try:

        def root() -> str | None:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/", timeout=2).text
            except httpx.TransportError:
                return None

        assert wait_until(root, timeout=60, interval=0.25, what="emulator answers").strip() == "Ok"
        started = watch.elapsed
        # The health check compose runs, inside the container.
        engine.docker("exec", name, *service["healthcheck"]["test"][1:])

        api = f"http://127.0.0.1:{port}/v1/projects/{project}"
        topic = f"projects/{project}/topics/image-check"
        put = httpx.put(f"{api}/topics/image-check", json={}, timeout=10)
        assert put.status_code == 200 and put.json()["name"] == topic, put.text
        put = httpx.put(f"{api}/subscriptions/image-check.work", json={"topic": topic}, timeout=10)
        assert put.status_code == 200, put.text
        data = base64.b64encode(b'{"object_ids":[2]}').decode()
        published = httpx.post(
            f"{api}/topics/image-check:publish", json={"messages": [{"data": data}]}, timeout=10
        )
        assert published.status_code == 200, published.text
        [message_id] = published.json()["messageIds"]
        pulled = httpx.post(
            f"{api}/subscriptions/image-check.work:pull", json={"maxMessages": 1}, timeout=10
        )
        [received] = pulled.json()["receivedMessages"]
        assert received["message"]["messageId"] == message_id
        assert received["message"]["data"] == data
    finally:
        watch = Stopwatch()
        engine.docker("stop", "--time", "20", name, timeout=60, check=False)
        stopped = watch.elapsed
        state = json.loads(engine.docker("inspect", name, check=False) or "[{}]")[0].get("State")
        engine.docker("rm", "-f", name, check=False)
    # Stopped by the stop signal, not killed when the 20 s ran out.
    assert stopped < 15, f"docker stop took {stopped:.1f}s"
    assert state and not state["OOMKilled"], state
    print(f"emulator image: serving after {started:.1f}s, stopped in {stopped:.1f}s")  # noqa: T201


def test_the_stand_in_gcloud_refuses_what_it_does_not_do(
    engine: Engine, pubsub_emulator_image: str
) -> None:
    """The stand-in's gcloud runs the emulator and nothing else: anything more exits 2 with one
    line (the official image's gcloud is the real one: nothing to check there)."""
    if pubsub_emulator_image == "official":
        assert "Google" in engine.docker("run", "--rm", PUBSUB_EMULATOR_IMAGE, "gcloud", "version")
        return
    refused = subprocess.run(
        ["docker", "run", "--rm", PUBSUB_EMULATOR_IMAGE, "gcloud", "components", "list"],
        env={**os.environ, **engine.env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2, refused
    assert refused.stderr.count("\n") == 1 and "stand-in" in refused.stderr, refused.stderr
