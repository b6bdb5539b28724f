"""Is the broker able to host the project's queues? A check, and one known repair.

RabbitMQ's ``rabbit_fifo_dlx_sup`` supervises the workers of every quorum queue with at-least-once
dead lettering (the project's work and retry queues). A burst of worker exits — many such queues
deleted within a second, as parallel test runs do at teardown — exceeds its restart intensity
(100 per second) and it stays dead: from then on every new such queue fails with
``541 INTERNAL_ERROR`` (``noproc``) until the node restarts (rabbitmq/rabbitmq-server#16652).
Restarting that one supervisor under ``rabbit_sup`` brings the node back without touching its
configuration, queues or connections.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid
from collections.abc import Callable
from urllib.parse import urlsplit

import aio_pika
import aiormq

from common.amqp import Topology, declare_topology

UPSTREAM_BUG = "rabbitmq/rabbitmq-server#16652"
REPAIR = "supervisor:restart_child(rabbit_sup, rabbit_fifo_dlx_sup)."


async def dead_lettering_works(uri: str) -> str | None:
    """None if a work queue with its retry and dead-letter queues can be declared; else why not."""
    connection = await aio_pika.connect(uri, timeout=10)
    topology = Topology(f"lastseen_probe_{uuid.uuid4().hex[:8]}")
    try:
        channel = await connection.channel()
        try:
            await declare_topology(channel, topology.work, retry_delays_ms=())
        except aiormq.exceptions.ConnectionInternalError as error:
            return f"declaring a quorum queue with at-least-once dead lettering failed: {error!r}"
        cleanup = await connection.channel()
        for queue in (topology.work, topology.dead):
            await cleanup.queue_delete(queue)
        return None
    finally:
        await connection.close()


def repair_locally(uri: str) -> bool:
    """Restart the dead supervisor on a broker of this machine; False if that is not possible."""
    host = urlsplit(uri).hostname or ""
    if host not in ("127.0.0.1", "localhost", "::1") or shutil.which("rabbitmqctl") is None:
        return False
    result = subprocess.run(
        ["rabbitmqctl", "eval", REPAIR], capture_output=True, text=True, timeout=60, check=False
    )
    return result.returncode == 0 and "{ok," in result.stdout


def ensure_dead_lettering(uri: str, repair: Callable[[], bool] | None = None) -> str | None:
    """Check, repair once if broken (by default: the machine's own node, if the URI is local),
    check again; None when healthy, else a reason naming the bug and the repair."""
    problem = asyncio.run(dead_lettering_works(uri))
    if problem is None:
        return None
    repaired = repair() if repair is not None else repair_locally(uri)
    if repaired and asyncio.run(dead_lettering_works(uri)) is None:
        return None
    return (
        f"{problem} (a known RabbitMQ bug, {UPSTREAM_BUG}; on the broker's host: "
        f"rabbitmqctl eval '{REPAIR}')"
    )
