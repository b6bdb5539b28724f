"""`docker compose` on a real engine, for the compose tests: the engine from scripts/docker-engine,
the base images (official or stand-in) and one compose project of the test's own, with its host
ports free ports on 127.0.0.1, so the tests reach the containers only through loopback and
`docker exec`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from dotenv import dotenv_values

from tests.support.ports import free_port
from tests.support.processes import PROJECT_ROOT

ENGINE_SCRIPT = PROJECT_ROOT / "scripts" / "docker-engine"
IMAGES_SCRIPT = PROJECT_ROOT / "tests" / "compose" / "images" / "ensure"
COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
PUBSUB_FILE = PROJECT_ROOT / "docker-compose.pubsub.yml"
PUBSUB_EMULATOR_IMAGE = "gcr.io/google.com/cloudsdktool/google-cloud-cli:emulators"
# The tests' tester pace and TTL: a callback every 200 ms instead of 5 s, rows kept for the audit.
FAST_OVERRIDE = PROJECT_ROOT / "tests" / "compose" / "fast-tester.yml"
FAST_HA_OVERRIDE = PROJECT_ROOT / "tests" / "compose" / "fast-ha.yml"
DOTENV: dict[str, str] = {k: v or "" for k, v in dotenv_values(PROJECT_ROOT / ".env").items()}
# The host ports docker-compose.yml publishes, each overridable by its variable.
HOST_PORT_VARIABLES = {
    "RABBITMQ_HOST_PORT": 5672,
    "RABBITMQ_UI_HOST_PORT": 15672,
    "POSTGRES_HOST_PORT": 5432,
    "PRODUCER_HOST_PORT": 9090,
    "TESTER_HOST_PORT": 9010,
    "PROMETHEUS_HOST_PORT": 9091,
    "GRAFANA_HOST_PORT": 3000,
}
EXPORT = re.compile(r"^export (\w+)=(.*)$")


class EngineUnavailable(RuntimeError):
    """No Docker engine can be had on this machine (no root, not Debian, ...)."""


@dataclass
class Engine:
    """The Docker engine the tests use; ``started`` when this process started it."""

    env: dict[str, str]
    started: bool

    @classmethod
    def acquire(cls) -> Engine:
        was_running = _engine("status").returncode == 0
        result = _engine("start", timeout=600)
        if result.returncode == 3:
            raise EngineUnavailable(_last_line(result.stderr))
        if result.returncode != 0:
            raise RuntimeError(f"scripts/docker-engine start failed:\n{result.stderr}")
        env = {m.group(1): m.group(2) for m in map(EXPORT.match, result.stdout.splitlines()) if m}
        return cls(env=env, started=not was_running)

    def release(self) -> None:
        if self.started:
            _engine("stop", timeout=120)

    def docker(self, *args: str, timeout: float = 60, check: bool = True) -> str:
        return run(["docker", *args], self.env, timeout=timeout, check=check).stdout

    def ensure_base_images(self, *options: str) -> dict[str, str]:
        """``{image: "official" | "standin"}`` after pulling or building what is missing
        (``--pubsub-emulator``: the Pub/Sub emulator's image alone; tests/compose/images)."""
        result = run([str(IMAGES_SCRIPT), *options], self.env, timeout=900)
        return dict(line.split() for line in result.stdout.splitlines() if line.strip())


def _engine(command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ENGINE_SCRIPT), command], capture_output=True, text=True, timeout=timeout, check=False
    )


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no reason given"


def run(
    command: Sequence[str],
    env: Mapping[str, str],
    *,
    timeout: float = 60,
    check: bool = True,
    cwd: Path = PROJECT_ROOT,
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(command),
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


@dataclass
class Project:
    """One compose project: its own name, its host ports on 127.0.0.1, its own volumes."""

    engine: Engine
    name: str
    ports: dict[str, int] = field(default_factory=dict)
    files: tuple[Path, ...] = (COMPOSE_FILE, FAST_OVERRIDE)
    # More variables for every `docker compose` of the project (as a user's environment)
    variables: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls, engine: Engine, name: str) -> Project:
        ports = {variable: free_port() for variable in HOST_PORT_VARIABLES}
        return cls(engine=engine, name=name, ports=ports)

    @property
    def env(self) -> dict[str, str]:
        published = {variable: f"127.0.0.1:{port}" for variable, port in self.ports.items()}
        return {**self.engine.env, **self.variables, **published}

    def compose(self, *args: str, timeout: float = 300, check: bool = True) -> str:
        files = [arg for path in self.files for arg in ("-f", str(path))]
        command = ["docker", "compose", "-p", self.name, *files, *args]
        return run(command, self.env, timeout=timeout, check=check).stdout

    def containers(self, service: str | None = None) -> list[dict[str, Any]]:
        """`docker inspect` of the project's containers (of one service), stopped ones too."""
        label = f"label=com.docker.compose.project={self.name}"
        filters = ["--filter", label]
        if service:
            filters += ["--filter", f"label=com.docker.compose.service={service}"]
        ids = self.engine.docker("ps", "-aq", *filters).split()
        return json.loads(self.engine.docker("inspect", *ids)) if ids else []

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, volumes and networks still labelled with the project's name."""
        label = f"label=com.docker.compose.project={self.name}"
        return {
            kind: self.engine.docker(*command, "--filter", label).split()
            for kind, command in {
                "containers": ("ps", "-aq"),
                "volumes": ("volume", "ls", "-q"),
                "networks": ("network", "ls", "-q"),
            }.items()
        }

    def url(self, variable: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports[variable]}{path}"

    def psql(self, sql: str) -> list[str]:
        """Rows of ``sql`` through the published PostgreSQL port, with .env's credentials."""
        command = [
            "psql",
            "-h", "127.0.0.1",
            "-p", str(self.ports["POSTGRES_HOST_PORT"]),
            "-U", DOTENV["POSTGRES_USER"],
            "-d", DOTENV["POSTGRES_DB"],
            "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql,
        ]  # fmt: skip
        result = run(command, {"PGPASSWORD": DOTENV["POSTGRES_PASSWORD"]}, timeout=30)
        return result.stdout.splitlines()

    def management(self, path: str) -> Any:
        """The RabbitMQ management API on the published UI port, with .env's account."""
        answer = httpx.get(
            self.url("RABBITMQ_UI_HOST_PORT", f"/api{path}"),
            auth=(DOTENV["RABBITMQ_DEFAULT_USER"], DOTENV["RABBITMQ_DEFAULT_PASS"]),
            timeout=10,
        )
        answer.raise_for_status()
        return answer.json()

    def all_healthy(self) -> bool:
        containers = self.containers()
        return bool(containers) and all(_health(c) == "healthy" for c in containers)

    def down(self) -> None:
        self.compose("down", "-v", "--remove-orphans", "--timeout", "30", check=False)


def _health(container: dict[str, Any]) -> str:
    state = container["State"]
    return str(state.get("Health", {}).get("Status") or state["Status"])


def health_summary(project: Project) -> dict[str, str]:
    return {c["Name"].lstrip("/"): _health(c) for c in project.containers()}


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start
