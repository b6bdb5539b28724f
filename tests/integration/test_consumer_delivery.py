"""Delivery guarantees of the consumer on each broker (the ``work_broker`` fixture): the bound
on messages held at once, a lease that outlasts the ack deadline, a killed consumer's messages
going to another one, and refused Pub/Sub credentials."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import httpx
import orjson
import pytest

from tests.support.consumer_brokers import WorkBroker, work_broker
from tests.support.consumer_status import (
    InProcessConsumer,
    StatusApi,
    consumer_env,
    consumer_settings,
    started,
    stored,
)
from tests.support.processes import ServiceProcess, run_module
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration
__all__ = ["work_broker"]  # the fixture, imported

Consumers = Callable[[dict[str, str]], Awaitable[InProcessConsumer]]


@pytest.fixture
async def consumers(work_broker: WorkBroker) -> AsyncIterator[Consumers]:
    running: list[InProcessConsumer] = []

    async def start(env: dict[str, str]) -> InProcessConsumer:
        env = work_broker.env(env)
        consumer = InProcessConsumer(consumer_settings(env))
        running.append(consumer)
        await consumer.start(lambda: work_broker.subscribed(env))
        return consumer

    yield start
    for consumer in reversed(running):
        await consumer.stop()


async def test_messages_held_at_once_never_exceed_prefetch(
    consumers: Consumers,
    service_env: dict[str, str],
    work_broker: WorkBroker,
    db_pool: asyncpg.Pool,
) -> None:
    """PREFETCH 2 with 20 lookups allowed: one id per message, so at most two lookups at once
    (RabbitMQ's basic.qos; Pub/Sub's FlowControl.max_messages)."""
    api = await StatusApi(delay=(0.1, 0.2)).start()
    try:
        await consumers(consumer_env(service_env, api, PREFETCH="2", MAX_CONSUMERS="20"))
        ids = list(range(100, 140, 2))
        for object_id in ids:
            await work_broker.publish([object_id], callback_id=f"cb{object_id}")

        async def all_stored() -> bool:
            return set(await stored(db_pool)) == set(ids)

        await eventually(all_stored, timeout=30, what="every id stored")
        assert api.peak == 2, f"{api.peak} lookups at once with 2 messages held"
    finally:
        await api.stop()


async def metrics(env: dict[str, str]) -> str:
    async with httpx.AsyncClient() as client:
        return (await client.get(f"http://127.0.0.1:{env['METRICS_PORT']}/metrics")).text


@pytest.mark.parametrize("work_broker", ["pubsub"], indirect=True)  # RabbitMQ has no ack deadline
async def test_a_lookup_longer_than_the_ack_deadline_is_not_redelivered(
    consumers: Consumers,
    service_env: dict[str, str],
    work_broker: WorkBroker,
    db_pool: asyncpg.Pool,
) -> None:
    """The lookup takes 13 s; the client acks a received message's deadline to 10 s: without
    the lease being extended it would be delivered again (a second message counted)."""
    api = await StatusApi(delay=(13.0, 13.0)).start()
    try:
        env = work_broker.env(consumer_env(service_env, api, STATUS_TIMEOUT="20s"))
        await consumers(env)
        await work_broker.publish([2], callback_id="slow")

        async def acked() -> str | None:
            text = await metrics(env)
            return text if "lastseen_consumer_acked_total 1.0" in text else None

        text = await eventually(acked, timeout=30, what="the slow message acked")
        assert 2 in await stored(db_pool)
        assert "lastseen_consumer_messages_total 1.0" in text, "delivered more than once"
        assert len(api.requests[2]) == 1
    finally:
        await api.stop()


async def test_a_killed_consumers_messages_go_to_another_consumer(
    spawn: Callable[..., ServiceProcess],
    consumers: Consumers,
    service_env: dict[str, str],
    work_broker: WorkBroker,
    db_pool: asyncpg.Pool,
) -> None:
    """kill -9 while a lookup hangs: the message was never acked, so it comes back (RabbitMQ:
    when the connection drops; Pub/Sub: when its lease, no longer extended, expires) and the
    next consumer stores it."""
    api = await StatusApi().start()
    try:
        api.scripts[4] = ["hang"]
        victim = await started(spawn("consumer", work_broker.env(consumer_env(service_env, api))))
        await work_broker.publish([4], callback_id="orphan")
        await eventually(lambda: len(api.requests[4]) == 1, timeout=20, what="lookup started")
        victim.kill()
        killed_at = time.monotonic()
        await consumers(consumer_env(service_env, api))

        async def four_stored() -> bool:
            return 4 in await stored(db_pool)

        await eventually(four_stored, timeout=45, what="redelivered and stored")
        redelivered_after = api.requests[4][1] - killed_at
        print(f"{work_broker.name}: redelivered {redelivered_after:.1f}s after the kill")  # noqa: T201
        assert len(api.requests[4]) == 2
    finally:
        await api.stop()


def test_refused_pubsub_credentials_exit_1_with_one_line(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    """No emulator: Application Default Credentials from a file that is not a credential."""
    credentials = tmp_path / "credentials.json"
    credentials.write_text('{"type": "service_account", "project_id": "x"}')
    env = {
        **service_env,
        "BROKER": "pubsub",
        "PUBSUB_PROJECT_ID": "lastseen-test",
        "GOOGLE_APPLICATION_CREDENTIALS": str(credentials),
        "TESTER_ENDPOINT": "http://127.0.0.1:9",
        "STARTUP_TIMEOUT": "5s",
    }
    env.pop("PUBSUB_EMULATOR_HOST", None)
    result = run_module("consumer", env, tmp_path / "run")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    errors = [
        line
        for line in result.stdout.splitlines()
        if line.startswith("{") and orjson.loads(line).get("level") == "error"
    ]
    assert len(errors) == 1, result.stdout
    assert "refused the credentials" in errors[0]
    assert not result.stderr.strip(), result.stderr
