"""The consumer tests' harness: a scripted status API (a real aiohttp server in the test's loop),
the consumer run in-process (:class:`InProcessConsumer`), and helpers to publish work, read the
table and wait, all async (a blocking wait would stall the status API and the consumer, which
share the test's loop).

Per id, a script of what the next requests get (``ok``, ``500``, ``hang``, ``garbage``,
``wrong-id``, ``reset``); afterwards ``default``. It records every request's time and the peak
number in flight, so tests can check backoff, single-flight and the concurrency bound.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime

import aio_pika
import asyncpg
from aiohttp import web

from common.messages import IdsMessage
from consumer.service import run_consumer
from consumer.settings import ConsumerSettings
from tests.support.processes import ServiceProcess
from tests.support.waiting import eventually


class StatusApi:
    def __init__(self, delay: tuple[float, float] = (0.0, 0.0)) -> None:
        self.delay = delay
        self.default = "ok"
        self.scripts: dict[int, list[str]] = {}
        self.requests: dict[int, list[float]] = defaultdict(list)
        self.in_flight = 0
        self.peak = 0
        self.answered_at: dict[int, list[float]] = defaultdict(list)
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> StatusApi:
        app = web.Application()
        app.router.add_get("/objects/{id}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def total_requests(self) -> int:
        return sum(len(times) for times in self.requests.values())

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        object_id = int(request.match_info["id"])
        self.requests[object_id].append(time.monotonic())
        script = self.scripts.get(object_id)
        action = script.pop(0) if script else self.default
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            if action == "hang":
                await asyncio.sleep(3600)
            await asyncio.sleep(random.uniform(*self.delay))
            if action == "500":
                return web.Response(status=500, text="boom")
            if action == "garbage":
                return web.Response(body=b"<html>not json</html>", content_type="text/html")
            if action == "reset":
                assert request.transport is not None
                request.transport.abort()
                return web.Response(status=500)
            answered = object_id + 1 if action == "wrong-id" else object_id
            self.answered_at[object_id].append(time.time())
            return web.json_response({"id": answered, "online": object_id % 2 == 0})
        finally:
            self.in_flight -= 1


def consumer_env(service_env: dict[str, str], api: StatusApi, **extra: str) -> dict[str, str]:
    return {
        **service_env,
        "TESTER_ENDPOINT": api.url,
        "MAX_CONSUMERS": "20",
        "STATUS_TIMEOUT": "1s",
        "MAX_ATTEMPTS": "3",
        "RETRY_BASE_DELAY": "250ms",
        "RETRY_MAX_DELAY": "500ms",
        "BATCH_MAX_DELAY": "20ms",
        "SHUTDOWN_GRACE": "5s",
        **extra,
    }


def consumer_settings(env: Mapping[str, str]) -> ConsumerSettings:
    """The settings ``python -m consumer`` would read from ``env`` (and nothing else)."""
    values = {name.lower(): value for name, value in env.items()}
    return ConsumerSettings(_env_file=None, **values)


class InProcessConsumer:
    """``run_consumer(settings, stop)`` as a task of the test's loop: no process to start, and a
    failure shows its traceback. For what needs a process (signals, exit codes, kill -9), use
    :func:`started` on a spawned one."""

    def __init__(self, settings: ConsumerSettings) -> None:
        self.settings = settings
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(
        self,
        subscribed: aio_pika.abc.AbstractChannel | Callable[[], Awaitable[bool]],
        timeout: float = 20.0,
    ) -> None:
        """Run it, and return once it consumes: from its queue (a channel to ask RabbitMQ on),
        or once ``subscribed()`` (another broker's check) is true."""
        self._task = task = asyncio.create_task(run_consumer(self.settings, self._stop))
        channel = None if callable(subscribed) else subscribed

        async def consuming() -> bool:
            if channel is None:
                assert callable(subscribed)
                return await subscribed()
            queue = await channel.declare_queue(self.settings.queue_name, passive=True)
            return (queue.declaration_result.consumer_count or 0) > 0

        async def started() -> bool:
            if task.done():
                task.result()
                raise AssertionError("run_consumer returned before it subscribed")
            return await consuming()

        await eventually(started, timeout=timeout, what="consumer subscribed")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self, timeout: float = 15.0) -> None:
        """Set ``stop`` and wait for the shutdown (drain, flush, acks) to finish; re-raise what
        it raised."""
        self._stop.set()
        if self._task is not None:
            await asyncio.wait_for(self._task, timeout)


async def started(process: ServiceProcess, timeout: float = 20.0) -> ServiceProcess:
    def check() -> bool:
        assert process.running(), f"consumer exited {process.returncode}:\n{process.output()}"
        return "consumer_started" in process.output()

    async def ready() -> bool:
        return check()

    await eventually(ready, timeout=timeout, what="consumer started")
    return process


async def publish(
    channel: aio_pika.abc.AbstractChannel,
    queue: str,
    ids: list[int],
    *,
    callback_id: str = "cb",
    attempt: int = 0,
    received_at: datetime | None = None,
) -> None:
    message = IdsMessage(callback_id, received_at or datetime.now(UTC), ids, attempt)
    await channel.default_exchange.publish(
        aio_pika.Message(message.encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
        routing_key=queue,
    )


async def stored(pool: asyncpg.Pool) -> dict[int, datetime]:
    return {r["id"]: r["last_seen"] for r in await pool.fetch("SELECT id, last_seen FROM object")}


async def ready_count(channel: aio_pika.abc.AbstractChannel, queue: str) -> int:
    declared = await channel.declare_queue(queue, passive=True)
    return declared.declaration_result.message_count or 0


async def wait_for_empty(channel: aio_pika.abc.AbstractChannel, queue: str) -> None:
    async def empty() -> bool:
        return await ready_count(channel, queue) == 0

    await eventually(empty, timeout=20, what="work queue drained")
