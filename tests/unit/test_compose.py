"""What can be checked of `docker compose up -d` without a Docker engine."""

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from dotenv import dotenv_values

from tests.support import config_table
from tests.support.compose import HOST_PORT_VARIABLES

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
DOTENV = dotenv_values(ROOT / ".env")
APP_COMMANDS = {"producer", "consumer", "routine", "tester"}


def app_services(module: str) -> list[str]:
    return [
        name for name, spec in SERVICES.items() if spec.get("command") == ["python", "-m", module]
    ]


def service_environment(name: str) -> dict[str, str]:
    spec = SERVICES[name]
    env: dict[str, str] = {}
    if spec.get("env_file"):
        env.update({k: v or "" for k, v in DOTENV.items()})
    env.update({k: str(v) for k, v in (spec.get("environment") or {}).items()})
    return env


def test_the_suite_has_its_services_and_ports() -> None:
    assert {"rabbitmq", "db"} <= set(SERVICES)
    assert all(app_services(module) for module in APP_COMMANDS)
    consumers = app_services("consumer")
    replicas = sum(SERVICES[name].get("deploy", {}).get("replicas", 1) for name in consumers)
    assert replicas >= 2, "two consumers, as the original"
    ports = {
        name: {_resolved(port) for port in spec.get("ports", [])} for name, spec in SERVICES.items()
    }
    assert {"5672:5672", "15672:15672"} <= ports["rabbitmq"]
    assert "5432:5432" in ports["db"]
    assert "9090:9090" in ports[app_services("producer")[0]]
    assert "9010:9010" in ports[app_services("tester")[0]]


def test_every_published_host_port_is_a_variable_with_a_default() -> None:
    """So one setting moves any of them off a port the host already uses, profiles included
    (the compose tests give every one of them a free port)."""
    used = {}
    for name, spec in SERVICES.items():
        for port in spec.get("ports", []):
            mapping = re.fullmatch(r"\$\{(\w+):-([^}]+)\}:(\d+)", port)
            assert mapping, f"{name} publishes {port!r}: use ${{<NAME>_HOST_PORT:-<default>}}"
            variable, default, _ = mapping.groups()
            assert variable.endswith("_HOST_PORT"), (name, variable)
            assert variable not in used, f"{variable} published by {used.get(variable)} and {name}"
            used[variable] = name
            assert DOTENV[variable] == default, f".env's {variable} is not compose's default"
            assert int(default.rpartition(":")[2]) == HOST_PORT_VARIABLES[variable]
    assert set(used) == set(HOST_PORT_VARIABLES)
    observability = {
        v for v, name in used.items() if "observability" in SERVICES[name].get("profiles", [])
    }
    assert observability == {"PROMETHEUS_HOST_PORT", "GRAFANA_HOST_PORT"}
    assert all(DOTENV[variable].startswith("127.0.0.1:") for variable in observability)


def test_consumers_raise_their_own_open_file_limit() -> None:
    """The consumer raises its soft limit to what MAX_CONSUMERS needs (common/open_files.py).
    A compose ``ulimits: nofile`` above the engine's own hard limit stops the container at
    start ("error setting rlimit type 7: operation not permitted", seen on an engine with a
    hard limit of 20,000), so compose sets none and leaves the hard limit to the engine."""
    for name in app_services("consumer"):
        assert "nofile" not in SERVICES[name].get("ulimits", {}), name
    assert "common/open_files.py" in (ROOT / "docker-compose.yml").read_text()


def _resolved(port: str) -> str:
    """A port mapping as .env resolves it (``${VAR:-default}`` takes .env's value)."""
    return re.sub(
        r"\$\{(\w+)(?::-([^}]*))?\}", lambda m: DOTENV.get(m.group(1)) or m.group(2) or "", port
    )


def test_broker_and_database_images_and_health_checks() -> None:
    image = SERVICES["rabbitmq"]["image"]
    match = re.fullmatch(r"rabbitmq:(\d+)\.(\d+)[\w.-]*-management", image)
    assert match, image
    assert (int(match.group(1)), int(match.group(2))) >= (3, 13)
    assert "rabbitmq-diagnostics" in " ".join(SERVICES["rabbitmq"]["healthcheck"]["test"])
    assert SERVICES["db"]["image"].startswith("postgres:16")
    assert "pg_isready" in " ".join(SERVICES["db"]["healthcheck"]["test"])
    assert SERVICES["rabbitmq"].get("volumes") and SERVICES["db"].get("volumes")


def test_services_wait_for_healthy_dependencies_and_restart() -> None:
    for name, spec in SERVICES.items():
        assert spec.get("restart") == "unless-stopped", name
        for dependency, condition in (spec.get("depends_on") or {}).items():
            assert condition == {"condition": "service_healthy"}, (name, dependency)
            assert "healthcheck" in SERVICES[dependency] or dependency in {
                *app_services("producer"),
                *app_services("tester"),
            }, f"{dependency} has no health check for {name} to wait on"
    for module in APP_COMMANDS:
        for name in app_services(module):
            assert "container_name" not in SERVICES[name], f"{name} could not be scaled"


def test_every_variable_a_service_needs_is_set() -> None:
    fields = config_table.settings_fields()
    for variable, (field, readers) in fields.items():
        if not field.is_required():
            continue
        for module in readers:
            for name in app_services(module):
                assert service_environment(name).get(variable), f"{name} lacks {variable}"


def test_interpolated_variables_are_in_dotenv_and_documented() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for variable in set(re.findall(r"\$\{(\w+)", text)):
        assert DOTENV.get(variable), f"docker-compose.yml uses ${{{variable}}}, unset in .env"
    lines = (ROOT / ".env").read_text().splitlines()
    for index, line in enumerate(lines):
        if line and not line.startswith("#"):
            comment_above = index > 0 and lines[index - 1].startswith("#")
            assert comment_above or "#" in line, f".env line without a comment: {line}"


def test_services_do_not_use_the_guest_account() -> None:
    assert "guest" not in DOTENV["AMQP_URI"]
    assert DOTENV["RABBITMQ_DEFAULT_USER"] != "guest"
    assert DOTENV["AMQP_URI"].startswith(f"amqp://{DOTENV['RABBITMQ_DEFAULT_USER']}:")
    assert DOTENV["POSTGRES_PASSWORD"]


def compose_cli() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    return ["docker", "compose"] if shutil.which("docker") and probe.returncode == 0 else None


def test_compose_config_is_valid() -> None:
    cli = compose_cli()
    if cli is None:
        pytest.skip("neither docker-compose nor the docker compose plugin is installed")
    result = subprocess.run(
        [*cli, "config", "-q"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "not set" not in result.stderr, result.stderr
