"""What can be checked of `docker compose -f docker-compose.yml -f docker-compose.ha.yml up -d`
without a Docker engine: the 3-node cluster, HAProxy before two producers, every client given
every broker node; and the CLI's own validation when a compose CLI is installed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from dotenv import dotenv_values

from common.nodes import parse_amqp_nodes
from tests.support import haproxy

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
HA = yaml.safe_load((ROOT / "docker-compose.ha.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = HA["services"]
DOTENV = dotenv_values(ROOT / ".env")
NODES = ("rabbitmq", "rabbitmq-2", "rabbitmq-3")


def _interpolated(value: str) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: DOTENV[m.group(1)] or "", value)


def test_three_broker_nodes_form_one_cluster_by_configuration() -> None:
    conf = (ROOT / "ha" / "rabbitmq.conf").read_text()
    assert "cluster_formation.peer_discovery_backend = classic_config" in conf
    # a partitioned node pauses, so its clients move to the majority (the faults tier)
    assert "\ncluster_partition_handling = pause_minority\n" in conf
    for number, node in enumerate(NODES, 1):
        assert f"classic_config.nodes.{number} = rabbit@{node}" in conf
        spec = SERVICES[node]
        assert spec["hostname"] == node
        assert "./ha/rabbitmq.conf:/etc/rabbitmq/conf.d/20-cluster.conf:ro" in spec["volumes"]
        assert spec["secrets"] == ["erlang_cookie"]
        assert "/run/secrets/erlang_cookie" in " ".join(spec["entrypoint"])
        assert spec["healthcheck"]
    # the management UI stays on the first node: the others publish nothing
    assert not any(SERVICES[node].get("ports") for node in NODES[1:])
    cookie = ROOT / HA["secrets"]["erlang_cookie"]["file"]
    assert re.fullmatch(r"[A-Z0-9]{20,}", cookie.read_text())


def test_every_broker_client_gets_every_node() -> None:
    for name in ("producer", "producer-2", "consumer"):
        nodes = parse_amqp_nodes(_interpolated(SERVICES[name]["environment"]["AMQP_URI"]))
        assert [re.search(r"@([\w-]+):", node).group(1) for node in nodes] == list(NODES)  # type: ignore[union-attr]
        assert set(SERVICES[name]["depends_on"]) == set(NODES)


def test_haproxy_before_two_producers_on_9090_with_the_tested_settings() -> None:
    balancer = SERVICES["balancer"]
    assert balancer["image"].startswith("haproxy:")
    assert balancer["ports"] == ["${BALANCER_HOST_PORT:-9090}:9090"]
    assert SERVICES["tester"]["environment"]["CALLBACK_ENDPOINT"] == "http://balancer:9090"
    cfg = (ROOT / "ha" / "haproxy.cfg").read_text()
    assert "server producer-1 producer:9090 check" in cfg
    assert "server producer-2 producer-2:9090 check" in cfg
    # the settings the cluster tests proved (tests/support/haproxy.py), word for word
    tested = haproxy.config(9090, 8404, [("p", 1)])
    for directive in (
        "retries 3",
        "option redispatch 1",
        "option http-buffer-request",
        "retry-on conn-failure empty-response junk-response",
        "option httpchk GET /health",
        "http-check expect status 200",
        "timeout connect 250ms",
    ):
        assert directive in tested and directive in cfg, directive
    # each producer spools on a volume of its own
    assert SERVICES["producer-2"]["volumes"] == ["producer-2-spool:/var/lib/lastseen/spool"]


def test_two_routines() -> None:
    assert SERVICES["routine"]["deploy"]["replicas"] == 2


def _compose_cli() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") is None:
        return None
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    return ["docker", "compose"] if probe.returncode == 0 else None


def test_the_compose_cli_accepts_the_override_and_no_host_port_is_published_twice() -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("neither docker-compose nor the docker compose plugin is installed")
    files = ["-f", "docker-compose.yml", "-f", "docker-compose.ha.yml"]
    env = {**os.environ, "PRODUCER_HOST_PORT": "9091"}
    quiet = subprocess.run(
        [*cli, *files, "config", "-q"], cwd=ROOT, capture_output=True, text=True, env=env
    )
    assert quiet.returncode == 0, quiet.stderr
    resolved = subprocess.run(
        [*cli, *files, "config"], cwd=ROOT, capture_output=True, text=True, env=env, check=True
    )
    published = re.findall(r"published: '?(\d+)'?", resolved.stdout)
    assert "9090" in published and "9091" in published
    assert len(published) == len(set(published)), published
