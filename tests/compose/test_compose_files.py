"""The compose files as Compose v2 merges them (the engine's own CLI plugin)."""

import json
import os
import shutil
import subprocess
from typing import Any

import pytest

from tests.support.compose import Engine
from tests.support.compose_files import load_compose
from tests.support.processes import PROJECT_ROOT as ROOT

pytestmark = pytest.mark.compose

PROD = load_compose("docker-compose.prod.yml")


def test_the_prod_override_merges_without_broker_or_database_ports(engine: Engine) -> None:
    docker = "docker"
    secrets = ROOT / "secrets"
    created = not secrets.exists()
    if created:
        secrets.mkdir()
        for name in PROD["secrets"]:
            (secrets / name).write_text("x\n")
    try:
        result = subprocess.run(
            [
                docker,
                "compose",
                "-f",
                "docker-compose.yml",
                "-f",
                "docker-compose.prod.yml",
                "config",
                "--format",
                "json",
            ],
            cwd=ROOT,
            env={**os.environ, **engine.env},
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        if created:
            shutil.rmtree(secrets)
    assert result.returncode == 0, result.stderr
    merged = json.loads(result.stdout)["services"]
    assert not merged["rabbitmq"].get("ports")
    assert not merged["db"].get("ports")


# What the data stores' entrypoints need to fix data ownership before dropping to their user.
DATA_STORE_CAPABILITIES = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID"]
# The HA file's copies of base services, to be hardened exactly as their originals.
HA_COPIES = {"rabbitmq-2": "rabbitmq", "rabbitmq-3": "rabbitmq", "producer-2": "producer"}


def merged_services(engine: Engine, *files: str) -> dict[str, dict[str, Any]]:
    """The services of ``files`` (every profile) as Compose merges and resolves them."""
    arguments = [arg for name in files for arg in ("-f", name)]
    result = subprocess.run(
        ["docker", "compose", *arguments, "--profile", "*", "config", "--format", "json"],
        cwd=ROOT,
        env={**os.environ, **engine.env, "PRODUCER_HOST_PORT": "9091"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    services: dict[str, dict[str, Any]] = json.loads(result.stdout)["services"]
    return services


def test_every_service_of_the_base_and_ha_files_is_hardened(engine: Engine) -> None:
    base = merged_services(engine, "docker-compose.yml")
    ha = merged_services(engine, "docker-compose.yml", "docker-compose.ha.yml")
    assert {"prometheus", "grafana"} <= set(base)
    assert set(ha) == {*base, *HA_COPIES, "balancer"}
    for name, spec in [*base.items(), *ha.items()]:
        assert spec.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in spec.get("security_opt", []), name
        image = str(spec["image"]).split(":")[0]
        if image in {"rabbitmq", "postgres"}:
            assert sorted(spec.get("cap_add", [])) == DATA_STORE_CAPABILITIES, name
        else:
            assert not spec.get("cap_add"), name
        if image in {"lastseen", "haproxy"}:
            assert spec.get("read_only") is True, name
    for copy, original in HA_COPIES.items():
        for key in ("cap_drop", "cap_add", "security_opt", "read_only", "tmpfs"):
            assert ha[copy].get(key) == ha[original].get(key), (copy, key)
