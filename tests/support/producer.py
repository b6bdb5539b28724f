"""The producer as a real process, and what it queued, as tests see them."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest

from common.messages import decode_message
from producer.confirms import PublishMode
from tests.support.ports import free_port
from tests.support.processes import ServiceProcess, Spawn
from tests.support.services import Endpoints
from tests.support.waiting import eventually

both_publish_modes = pytest.mark.parametrize("publish_mode", list(PublishMode), ids=str)
"""Run a test once per ``PUBLISH_MODE``: the tests that publish, confirm, nack, return, spool
on a blocked or cut broker. The test takes ``publish_mode`` and hands it to the producer."""


def producer_env(
    amqp_uri: str, queue_name: str, spool: Path, port: int, **extra: str
) -> dict[str, str]:
    return {
        "AMQP_URI": amqp_uri,
        "QUEUE_NAME": queue_name,
        "PRODUCER_HOST": "127.0.0.1",
        "PRODUCER_PORT": str(port),
        "SPOOL_PATH": str(spool),
        "BROKER_MAX_BACKOFF": "1s",
        "SHUTDOWN_GRACE": "5s",
        **extra,
    }


def accepts_connections(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def ready_state(port: int) -> dict[str, Any] | None:
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1)
    except httpx.TransportError:
        return None
    return response.json()  # type: ignore[no-any-return]


def wait_broker_connected(process: ServiceProcess, port: int) -> None:
    process.wait_ready(lambda: (ready_state(port) or {}).get("broker") == "connected")


def start_connected(
    spawn: Spawn, endpoints: Endpoints, queue_name: str, tmp_path: Path, **extra: str
) -> tuple[ServiceProcess, int]:
    """A producer on a free port, straight to the broker, once it reports the broker connected."""
    port = free_port()
    process = spawn(
        "producer", producer_env(endpoints.amqp_uri, queue_name, tmp_path / "s.db", port, **extra)
    )
    wait_broker_connected(process, port)
    return process, port


async def queued_ids(connection: aio_pika.abc.AbstractConnection, queue: str) -> list[int]:
    channel = await connection.channel()
    try:
        work = await channel.declare_queue(queue, passive=True)
        ids: list[int] = []
        while (message := await work.get(no_ack=True, fail=False)) is not None:
            ids.extend(decode_message(message.body).ids)
        return ids
    finally:
        await channel.close()


async def collect_until(
    connection: aio_pika.abc.AbstractConnection, queue: str, expected: set[int], timeout: float
) -> list[int]:
    """Take messages from ``queue`` until every expected id arrived; return all ids taken."""
    taken: list[int] = []

    async def complete() -> bool:
        taken.extend(await queued_ids(connection, queue))
        return expected <= set(taken)

    await eventually(complete, timeout=timeout, interval=0.2, what="every id queued")
    return taken


def _async(value: bool) -> Any:
    async def check() -> bool:
        return value

    return check()
