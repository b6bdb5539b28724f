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


def merged_services(
    engine: Engine, *files: str, profiles: tuple[str, ...] = ("*",)
) -> dict[str, dict[str, Any]]:
    """The services of ``files`` as Compose merges and resolves them: those of ``profiles`` (every
    profile by default) and those of none; ``profiles=()``: what a plain ``up`` starts."""
    arguments = [arg for name in files for arg in ("-f", name)]
    enabled = [arg for profile in profiles for arg in ("--profile", profile)]
    result = subprocess.run(
        ["docker", "compose", *arguments, *enabled, "config", "--format", "json"],
        cwd=ROOT,
        env={**os.environ, **engine.env, "PRODUCER_HOST_PORT": "9091"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    services: dict[str, dict[str, Any]] = json.loads(result.stdout)["services"]
    return services


def test_every_service_of_every_compose_file_is_hardened(engine: Engine) -> None:
    base = merged_services(engine, "docker-compose.yml")
    ha = merged_services(engine, "docker-compose.yml", "docker-compose.ha.yml")
    redis = merged_services(engine, "docker-compose.yml", "docker-compose.redis.yml")
    pubsub = merged_services(engine, "docker-compose.yml", "docker-compose.pubsub.yml")
    assert {"prometheus", "grafana"} <= set(base)
    assert set(ha) == {*base, *HA_COPIES, "balancer"}
    assert set(redis) == {*base, "redis"}
    assert set(pubsub) == {*base, "pubsub-emulator"}
    for name, spec in [*base.items(), *ha.items(), *redis.items(), *pubsub.items()]:
        assert spec.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in spec.get("security_opt", []), name
        image = str(spec["image"]).split(":")[0]
        if image in {"rabbitmq", "postgres", "redis"}:
            assert sorted(spec.get("cap_add", [])) == DATA_STORE_CAPABILITIES, name
        else:
            assert not spec.get("cap_add"), name
        if image in {"lastseen", "haproxy", "redis"}:
            assert spec.get("read_only") is True, name
    for copy, original in HA_COPIES.items():
        for key in ("cap_drop", "cap_add", "security_opt", "read_only", "tmpfs"):
            assert ha[copy].get(key) == ha[original].get(key), (copy, key)


def test_the_redis_override_runs_redis_with_aof_and_nothing_of_postgres(engine: Engine) -> None:
    files = ("docker-compose.yml", "docker-compose.redis.yml")
    started = merged_services(engine, *files, profiles=())
    assert set(started) == {"rabbitmq", "redis", "producer", "consumer", "tester"}
    for name, spec in started.items():
        assert not {"db", "routine"} & set(spec.get("depends_on", {})), name
    every = merged_services(engine, *files)
    assert every["db"]["profiles"] == every["routine"]["profiles"] == ["postgres"]

    redis = started["redis"]
    command = redis["command"]
    assert command[0] == "redis-server" and str(redis["image"]).startswith("redis:7")
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert options == {"--appendonly": "yes", "--appendfsync": "everysec"}
    assert [(v["type"], v["target"]) for v in redis["volumes"]] == [("volume", "/data")]
    assert "redis-cli ping" in " ".join(redis["healthcheck"]["test"])
    assert all(port["host_ip"] == "127.0.0.1" for port in redis["ports"])

    consumer = started["consumer"]
    assert consumer["environment"]["STORE"] == "redis"
    assert consumer["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    assert consumer["depends_on"]["redis"]["condition"] == "service_healthy"
    assert consumer["depends_on"].keys() == {"rabbitmq", "redis", "tester"}


def test_the_pubsub_override_runs_the_emulator_and_no_rabbitmq(engine: Engine) -> None:
    """docker-compose.pubsub.yml as Compose merges it: RabbitMQ neither started nor waited for,
    the producer and the consumers on the emulator once it is healthy."""
    services = merged_services(
        engine, "docker-compose.yml", "docker-compose.pubsub.yml", profiles=()
    )
    assert set(services) == {"pubsub-emulator", "db", "producer", "consumer", "routine", "tester"}
    for name, spec in services.items():
        assert "rabbitmq" not in spec.get("depends_on", {}), name
    emulator = services["pubsub-emulator"]
    assert emulator["healthcheck"]["test"][:2] == ["CMD", "curl"]
    assert "--host-port=0.0.0.0:8085" in emulator["command"]
    project = next(a for a in emulator["command"] if a.startswith("--project="))
    for name in ("producer", "consumer"):
        spec = services[name]
        assert spec["depends_on"]["pubsub-emulator"]["condition"] == "service_healthy", name
        env = spec["environment"]
        assert env["BROKER"] == "pubsub", name
        assert env["PUBSUB_EMULATOR_HOST"] == "pubsub-emulator:8085", name
        assert project == f"--project={env['PUBSUB_PROJECT_ID']}", name
        assert env["AMQP_URI"] == "", f"{name} would still read .env's RabbitMQ URI"
    assert set(services["consumer"]["depends_on"]) == {"pubsub-emulator", "db", "tester"}
    # The base file alone is unchanged: RabbitMQ runs and the services wait for it.
    base = merged_services(engine, "docker-compose.yml", profiles=())
    assert "rabbitmq" in base and "pubsub-emulator" not in base
    assert "rabbitmq" in base["producer"]["depends_on"]
    assert "BROKER" not in base["producer"]["environment"]
