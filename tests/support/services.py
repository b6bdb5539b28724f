"""Where the test run's RabbitMQ and PostgreSQL come from.

In order: ``TEST_AMQP_URI`` / ``TEST_DATABASE_URL``; else the local defaults when they answer; else
testcontainers when a Docker engine answers; else the run stops with one line saying how to
provide them. Never a silent skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import aio_pika
import asyncpg

from tests.support.broker_health import ensure_dead_lettering

LOCAL_AMQP_URI = "amqp://guest:guest@127.0.0.1:5672/"
LOCAL_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

HOW_TO_PROVIDE = (
    "set TEST_AMQP_URI and TEST_DATABASE_URL, run RabbitMQ on 127.0.0.1:5672 (guest/guest) and "
    "PostgreSQL on 127.0.0.1:5432 (user postgres), or start a Docker engine for testcontainers"
)


@dataclass(frozen=True)
class Endpoints:
    amqp_uri: str
    database_url: str  # an admin connection: may create and drop databases
    source: str

    @property
    def amqp_host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.amqp_uri)
        return parts.hostname or "127.0.0.1", parts.port or 5672

    @property
    def database_host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.database_url)
        return parts.hostname or "127.0.0.1", parts.port or 5432


class ServicesUnavailable(RuntimeError):
    pass


async def _amqp_answers(uri: str) -> str | None:
    try:
        connection = await aio_pika.connect(uri, timeout=5)
    except Exception as error:
        return repr(error)
    await connection.close()
    return None


async def _postgres_answers(url: str) -> str | None:
    try:
        connection = await asyncpg.connect(url, timeout=5)
    except Exception as error:
        return repr(error)
    await connection.close()
    return None


def _check(amqp_uri: str, database_url: str) -> list[str]:
    async def both() -> list[str]:
        amqp, pg = await asyncio.gather(_amqp_answers(amqp_uri), _postgres_answers(database_url))
        problems = []
        if amqp:
            problems.append(f"RabbitMQ at {amqp_uri}: {amqp}")
        if pg:
            problems.append(f"PostgreSQL at {database_url}: {pg}")
        return problems

    return asyncio.run(both())


def _require_dead_lettering(amqp_uri: str) -> None:
    problem = ensure_dead_lettering(amqp_uri)
    if problem:
        raise ServicesUnavailable(f"RabbitMQ at {amqp_uri}: {problem}")


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=False)
    return probe.returncode == 0


@contextlib.contextmanager
def provide_endpoints() -> Iterator[Endpoints]:
    amqp_env = os.environ.get("TEST_AMQP_URI")
    pg_env = os.environ.get("TEST_DATABASE_URL")
    if amqp_env or pg_env:
        endpoints = Endpoints(amqp_env or LOCAL_AMQP_URI, pg_env or LOCAL_DATABASE_URL, "env")
        problems = _check(endpoints.amqp_uri, endpoints.database_url)
        if problems:
            raise ServicesUnavailable("; ".join(problems))
        _require_dead_lettering(endpoints.amqp_uri)
        yield endpoints
        return
    local_problems = _check(LOCAL_AMQP_URI, LOCAL_DATABASE_URL)
    if not local_problems:
        _require_dead_lettering(LOCAL_AMQP_URI)
        yield Endpoints(LOCAL_AMQP_URI, LOCAL_DATABASE_URL, "local")
        return
    if _docker_answers():
        with _containers() as endpoints:
            yield endpoints
        return
    raise ServicesUnavailable(
        f"no RabbitMQ/PostgreSQL for the tests ({'; '.join(local_problems)}): {HOW_TO_PROVIDE}"
    )


@contextlib.contextmanager
def _containers() -> Iterator[Endpoints]:
    from testcontainers.postgres import PostgresContainer
    from testcontainers.rabbitmq import RabbitMqContainer

    with (
        RabbitMqContainer("rabbitmq:3.13-management") as rabbit,
        PostgresContainer("postgres:16", driver=None) as postgres,
    ):
        amqp = (
            f"amqp://guest:guest@{rabbit.get_container_host_ip()}:{rabbit.get_exposed_port(5672)}/"
        )
        yield Endpoints(amqp, postgres.get_connection_url(), "testcontainers")
