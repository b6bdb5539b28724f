"""The consumer against the real brokers (RabbitMQ, and Google's Pub/Sub emulator: the
``work_broker`` fixture runs each test on both) and PostgreSQL, with a scripted status API in the
test's own loop (so every wait here is async: a blocking wait would stall it). The consumer runs
in-process (``run_consumer(settings, stop)``); one test runs it as a real process (SIGTERM, exit
code, metrics over HTTP), as do the command-line ones (``replay-dead``, a bad configuration)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aio_pika
import aiohttp
import aiormq
import asyncpg
import httpx
import orjson
import pytest

from common.amqp import declare_topology
from common.messages import IdsMessage, decode_message
from consumer.broker import Letter
from consumer.dead_letter import ERRORS_HEADER, KIND_HEADER, REASON_HEADER, exhausted_letter
from consumer.service import run_consumer
from consumer.subscription import Subscription
from tests.support.consumer_brokers import DeadLetter, WorkBroker, work_broker
from tests.support.consumer_status import (
    InProcessConsumer,
    StatusApi,
    consumer_env,
    consumer_settings,
    started,
    stored,
)
from tests.support.ports import free_port
from tests.support.processes import ServiceProcess, run_module
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration
__all__ = ["work_broker"]  # the fixture, imported


@pytest.fixture
async def status_api() -> AsyncIterator[StatusApi]:
    api = await StatusApi(delay=(0.05, 0.15)).start()
    try:
        yield api
    finally:
        await api.stop()


@pytest.fixture
async def consumers(
    work_broker: WorkBroker,
) -> AsyncIterator[Callable[[dict[str, str]], Awaitable[InProcessConsumer]]]:
    """Start consumers in-process on ``work_broker`` from an environment (the broker's settings
    are added); each is stopped afterwards."""
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


Consumers = Callable[[dict[str, str]], Awaitable[InProcessConsumer]]


@pytest.fixture
async def channel(
    amqp_connection: aio_pika.abc.AbstractConnection, queue_name: str
) -> aio_pika.abc.AbstractChannel:
    channel = await amqp_connection.channel(publisher_confirms=True)
    await declare_topology(channel, queue_name)
    return channel


async def test_online_ids_stored_offline_never_and_in_flight_bounded(
    spawn: Callable[..., ServiceProcess],
    service_env: dict[str, str],
    status_api: StatusApi,
    work_broker: WorkBroker,
    db_pool: asyncpg.Pool,
) -> None:
    metrics_port = free_port()
    env = work_broker.env(consumer_env(service_env, status_api, METRICS_PORT=str(metrics_port)))
    consumer = await started(spawn("consumer", env))
    ids = list(range(1000, 1200))
    for k in range(0, len(ids), 25):
        await work_broker.publish(ids[k : k + 25], callback_id=f"cb{k}")
    # The same id in three messages at once: single-flight asks once for the overlap.
    for n in range(3):
        await work_broker.publish([5000], callback_id=f"dup{n}")

    evens = {i for i in ids if i % 2 == 0} | {5000}

    async def all_stored() -> bool:
        return set(await stored(db_pool)) == evens

    await eventually(all_stored, timeout=30, what="online ids stored")
    await eventually(
        lambda: status_api.total_requests >= len(ids), timeout=30, what="odd ids asked too"
    )
    rows = await stored(db_pool)
    assert not any(i % 2 for i in rows), "an offline id was stored"
    for object_id in evens - {5000}:
        answered = status_api.answered_at[object_id][0]
        seen = rows[object_id].timestamp()
        assert abs(seen - answered) < 0.5, (object_id, seen, answered)
    assert status_api.peak <= 20
    assert status_api.peak >= 10, "the consumer should keep many lookups in flight"
    assert len(status_api.requests[5000]) < 3

    async def metrics_settled() -> str | None:
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
        return text if "lastseen_consumer_acked_total 11.0" in text else None

    metrics = await eventually(metrics_settled, timeout=10, what="11 messages acked")
    assert "lastseen_consumer_messages_total 11.0" in metrics
    assert "lastseen_consumer_ids_total 203.0" in metrics
    assert "lastseen_consumer_dead_total 0.0" in metrics
    assert consumer.terminate(timeout=10) == 0
    assert await work_broker.work_left() == 0, "every message was acked"


async def test_redelivery_and_older_observations_never_move_time_back(
    consumers: Consumers,
    service_env: dict[str, str],
    status_api: StatusApi,
    work_broker: WorkBroker,
    db_pool: asyncpg.Pool,
) -> None:
    future = datetime.now(UTC) + timedelta(hours=1)
    await db_pool.execute("INSERT INTO object VALUES (2, $1)", future)
    await consumers(consumer_env(service_env, status_api))
    await work_broker.publish([2, 4])

    async def four_stored() -> datetime | None:
        return (await stored(db_pool)).get(4)

    first = await eventually(four_stored, timeout=20, what="id 4 stored")
    assert (await stored(db_pool))[2] == future, "an older observation overwrote a newer one"
    # The same message again (a redelivery) with the status API answering as before: a newer
    # observation moves 4 forward, nothing moves back, nothing else appears.
    await work_broker.publish([2, 4])
    await eventually(
        lambda: len(status_api.requests[4]) == 2, timeout=30, what="redelivery looked up"
    )

    async def moved_on() -> bool:
        return (await stored(db_pool))[4] > first

    await eventually(moved_on, timeout=10, what="id 4 refreshed")
    rows = await stored(db_pool)
    assert rows[2] == future
    assert set(rows) == {2, 4}


async def test_failures_retry_with_growing_delays_then_dead_letter_and_replay(
    consumers: Consumers,
    service_env: dict[str, str],
    status_api: StatusApi,
    work_broker: WorkBroker,
    db_pool: asyncpg.Pool,
    tmp_path: Path,
) -> None:
    # 10: always 500; 12: hangs past STATUS_TIMEOUT; 14: garbage; 16: the wrong id; 18: two
    # failures then healthy (stored after retries); 20: healthy from the start.
    for object_id, action in [(10, "500"), (12, "hang"), (14, "garbage"), (16, "wrong-id")]:
        status_api.scripts[object_id] = [action] * 3
    status_api.scripts[18] = ["500", "reset"]
    env = consumer_env(service_env, status_api, STATUS_TIMEOUT="500ms")
    consumer = await consumers(env)
    await work_broker.publish([10, 12, 14, 16, 18, 20], callback_id="cb-fail")

    async def both_stored() -> bool:
        return set(await stored(db_pool)) == {18, 20}

    await eventually(both_stored, timeout=30, what="18 after retries, 20 at once")
    letters: list[DeadLetter] = []

    async def dead_lettered() -> bool:
        letters.extend(await work_broker.take_dead_letters())
        return sum(len(decode_message(m.body).ids) for m in letters) == 4

    await eventually(dead_lettered, timeout=30, what="four ids dead-lettered")
    assert {i for m in letters for i in decode_message(m.body).ids} == {10, 12, 14, 16}
    errors: dict[str, str] = {}
    for letter in letters:
        assert letter.headers[KIND_HEADER] == "exhausted"
        assert letter.headers["x-lastseen-callback-id"] == "cb-fail"
        assert letter.headers["x-lastseen-attempts"] == "3"
        assert letter.headers[REASON_HEADER]
        errors |= orjson.loads(letter.headers[ERRORS_HEADER])
    assert errors["10"] == "http 500"
    assert errors["12"] == "timeout"
    assert errors["14"] == "bad body: not JSON"
    assert errors["16"] == "wrong id: asked 16, answered 17"
    # Three attempts each, with growing, jittered delays: [125, 250] ms, then [250, 500] ms.
    for object_id in (10, 14, 16):
        times = status_api.requests[object_id]
        assert len(times) == 3, (object_id, times)
        first_gap, second_gap = times[1] - times[0], times[2] - times[1]
        assert 0.12 <= first_gap < 1.0, (object_id, first_gap)
        assert 0.25 <= second_gap < 1.5, (object_id, second_gap)
    assert len(status_api.requests[20]) == 1
    assert not any(i % 2 for i in await stored(db_pool))

    # The letters are parked again (as found); the status API recovers; replay-dead brings the
    # ids back and they are stored.
    for letter in letters:
        await work_broker.put_dead(Letter(letter.body, letter.headers))
    status_api.scripts.clear()

    async def replay() -> str:
        result = await asyncio.to_thread(
            run_module, "consumer", work_broker.env(env), tmp_path / "replay", "replay-dead"
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    output = await replay()
    assert replay_counts(output) == [len(letters)], output

    async def all_stored() -> bool:
        return set(await stored(db_pool)) == {10, 12, 14, 16, 18, 20}

    await eventually(all_stored, timeout=30, what="replayed ids stored")
    assert await work_broker.take_dead_letters() == []
    await consumer.stop()


async def test_connection_refused_is_retried_then_dead_lettered(
    consumers: Consumers,
    service_env: dict[str, str],
    status_api: StatusApi,
    work_broker: WorkBroker,
) -> None:
    closed_port_url = status_api.url
    await status_api.stop()  # nothing listens there any more: connections are refused
    env = consumer_env(service_env, status_api, TESTER_ENDPOINT=closed_port_url, MAX_ATTEMPTS="2")
    await consumers(env)
    await work_broker.publish([30, 31], callback_id="cb-refused")

    async def letter() -> DeadLetter | None:
        return next(iter(await work_broker.take_dead_letters()), None)

    found = await eventually(letter, timeout=20, what="dead letter")
    assert decode_message(found.body).ids == [30, 31]
    assert "cannot connect" in found.headers[REASON_HEADER]
    assert await work_broker.work_left() == 0


@pytest.mark.parametrize(
    "body",
    [
        b"not json at all",
        b"[1, 2, 3]",
        b'{"v": 99, "callback_id": "x", "received_at": "2026-01-01T00:00:00Z", "ids": [1]}',
        b'{"v": 1, "callback_id": "x", "received_at": "2026-01-01T00:00:00Z", "ids": ["a"]}',
        b"\xff\xfe",
    ],
)
async def test_malformed_messages_are_dead_lettered_and_acked(
    consumers: Consumers,
    service_env: dict[str, str],
    status_api: StatusApi,
    work_broker: WorkBroker,
    db_pool: asyncpg.Pool,
    body: bytes,
) -> None:
    consumer = await consumers(consumer_env(service_env, status_api))
    await work_broker.publish_raw(body)
    await work_broker.publish([42])

    async def letter() -> DeadLetter | None:
        return next(iter(await work_broker.take_dead_letters()), None)

    found = await eventually(letter, timeout=20, what="dead letter")
    assert found.body == body
    assert found.headers[KIND_HEADER] == "malformed"
    assert found.headers[REASON_HEADER]

    async def next_one_stored() -> bool:
        return 42 in await stored(db_pool)

    await eventually(next_one_stored, timeout=20, what="the next message processed")
    assert consumer.running
    assert await work_broker.work_left() == 0
    assert await work_broker.take_dead_letters() == [], "one dead letter, once"


async def test_a_refused_subscription_leaves_no_task_running(
    service_env: dict[str, str],
    status_api: StatusApi,
    channel: aio_pika.abc.AbstractChannel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The broker refuses the subscription after the heartbeat, the batch writer and the metrics
    server started: run_consumer raises the refusal, and nothing it started outlives it."""

    async def refused(cls: type[Subscription], *args: object, **kwargs: object) -> Subscription:
        raise aiormq.exceptions.ChannelAccessRefused("ACCESS_REFUSED - queue in exclusive use")

    monkeypatch.setattr(Subscription, "open", classmethod(refused))
    metrics_port = free_port()
    env = consumer_env(service_env, status_api, METRICS_PORT=str(metrics_port))
    before = asyncio.all_tasks()
    with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
        await run_consumer(consumer_settings(env), asyncio.Event())

    def left_running() -> list[str]:
        return [repr(t.get_coro()) for t in asyncio.all_tasks() - before if not t.done()]

    await eventually(lambda: not left_running(), timeout=5, what=f"tasks end: {left_running()}")
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", metrics_port)) != 0, "metrics still served"


def test_bad_configuration_exits_2_with_one_line(tmp_path: Path) -> None:
    env = {
        "AMQP_URI": "amqp://guest:guest@127.0.0.1:5672/",
        "QUEUE_NAME": "q",
        "POSTGRES_HOST": "x",
        "POSTGRES_DB": "x",
        "POSTGRES_USER": "x",
        "MAX_CONSUMERS": "lots",
    }
    result = run_module("consumer", env, tmp_path)
    assert result.returncode == 2
    assert "TESTER_ENDPOINT is required" in result.stderr
    assert "MAX_CONSUMERS" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


async def test_with_the_tester_faults_and_all(
    spawn: Callable[..., ServiceProcess],
    consumers: Consumers,
    service_env: dict[str, str],
    work_broker: WorkBroker,
    db_pool: asyncpg.Pool,
) -> None:
    """The real status API with short delays and a share of 500s, hangs and garbage: every
    online id is stored in the end, no offline one, and the tester never sees more than
    MAX_CONSUMERS requests from the consumer at once."""
    tester = spawn(
        "tester",
        {
            "TESTER_PORT": "0",
            "TESTER_HOST": "127.0.0.1",
            "CALLBACK_ENDPOINT": "http://127.0.0.1:9",
            "TESTER_INTERVAL": "1h",
            "TESTER_DELAY_MIN": "20ms",
            "TESTER_DELAY_MAX": "200ms",
            "TESTER_ERROR_RATE": "0.1",
            "TESTER_HANG_RATE": "0.05",
            "TESTER_GARBAGE_RATE": "0.1",
            "TESTER_SEED": "7",
        },
    )
    await eventually(
        lambda: "tester_listening" in tester.output(), timeout=30, what="tester_listening"
    )
    line = next(x for x in tester.output().splitlines() if "tester_listening" in x)
    url = f"http://127.0.0.1:{orjson.loads(line)['port']}"
    env = {
        **service_env,
        "TESTER_ENDPOINT": url,
        "MAX_CONSUMERS": "25",
        "STATUS_TIMEOUT": "500ms",
        "MAX_ATTEMPTS": "10",
        "RETRY_BASE_DELAY": "250ms",
        "RETRY_MAX_DELAY": "500ms",
        "BATCH_MAX_DELAY": "20ms",
    }
    await consumers(env)
    ids = list(range(0, 400))
    for k in range(0, len(ids), 40):
        await work_broker.publish(ids[k : k + 40], callback_id=f"cb{k}")

    async def all_stored() -> bool:
        return set(await stored(db_pool)) == {i for i in ids if i % 2 == 0}

    await eventually(all_stored, timeout=60, what="every online id stored despite faults")
    async with aiohttp.ClientSession() as http, http.get(f"{url}/stats") as response:
        stats = await response.json()
    objects = stats.get("objects", stats)
    assert objects["peak_in_flight"] <= 25
    assert objects["answered"]["error"] > 0 and objects["answered"]["garbage"] > 0
    assert objects["gave_up"] > 0, "some requests hung until the consumer gave up"

    async def drained() -> bool:
        return await work_broker.work_left() == 0

    await eventually(drained, timeout=20, what="work drained")


async def test_replay_dead_respects_the_limit_and_resets_attempts(
    service_env: dict[str, str],
    work_broker: WorkBroker,
    tmp_path: Path,
) -> None:
    work = IdsMessage("cb-dead", datetime.now(UTC), [7, 8], attempt=5)
    for n in range(3):
        await work_broker.put_dead(exhausted_letter(work, {7: "timeout", 8: f"http 50{n}"}))
    result = await asyncio.to_thread(
        run_module,
        "consumer",
        work_broker.env(service_env),
        tmp_path,
        "replay-dead",
        "--limit",
        "2",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert replay_counts(result.stdout) == [2], result.stdout
    assert len(await work_broker.take_dead_letters()) == 1
    replayed = [decode_message(body) for body in await work_broker.take_work(2)]
    for body in replayed:
        assert (body.ids, body.attempt, body.callback_id) == ([7, 8], 0, "cb-dead")
    assert await work_broker.work_left() == 0


def replay_counts(output: str) -> list[int]:
    """The ``moved`` count of each ``dead_letters_replayed`` line in a JSON log."""
    events = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return [e["moved"] for e in events if e.get("event") == "dead_letters_replayed"]
