"""The producer's app in-process, on the real RabbitMQ and on Google's Pub/Sub emulator: what a
callback puts in the queue (or topic), what bad input does not, and what happens when the broker or
the spool is away. Tests taking ``broker`` run once per broker (tests/support/producer_brokers.py);
the rest are RabbitMQ's own (its queue, frames, alarms)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import orjson
import pytest
import structlog
from pamqp import commands as spec

from common.messages import IdsMessage, decode_message
from producer.api import create_app
from producer.confirms import PublishMode
from producer.service import ProducerCore, running_core
from producer.settings import ProducerSettings
from tests.support.amqp import amqp_uri_via
from tests.support.amqp_proxy import AmqpFrameProxy
from tests.support.producer import both_publish_modes
from tests.support.producer_brokers import BrokerUnderTest, PubSubBroker, every_broker_and_mode
from tests.support.proxy import TcpProxy
from tests.support.pubsub_clients import publisher_client
from tests.support.services import Endpoints
from tests.support.spool import fill_disk
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration


@dataclass
class Running:
    client: httpx.AsyncClient
    core: ProducerCore

    async def post(self, body: Any, **kwargs: Any) -> httpx.Response:
        return await self.client.post("/callback", json=body, **kwargs)


StartProducer = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start_producer(
    endpoints: Endpoints, queue_name: str, tmp_path: Path
) -> AsyncIterator[StartProducer]:
    """Start the core and the app on it, as ``python -m producer`` does; ``amqp_uri`` and
    settings can be overridden (``**broker.settings()``: another broker)."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(*, wait_connected: bool = True, **overrides: Any) -> Running:
            settings = ProducerSettings(
                _env_file=None,
                **{
                    "amqp_uri": endpoints.amqp_uri,
                    "queue_name": queue_name,
                    "spool_path": tmp_path / "spool.sqlite3",
                    "shutdown_grace": 2.0,
                    **overrides,
                },
            )
            core = await stack.enter_async_context(running_core(settings))
            app = create_app(
                core.ingest,
                settings.callback_limits(),
                settings.callback_auth(),
            )
            client = await stack.enter_async_context(
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url="http://producer"
                )
            )
            if wait_connected:
                await asyncio.wait_for(core.publisher.wait_connected(), timeout=10)
            return Running(client, core)

        yield start


async def queued(connection: aio_pika.abc.AbstractConnection, queue: str) -> list[IdsMessage]:
    """Take every message now in ``queue``, checking each is persistent, well-formed JSON."""
    channel = await connection.channel()
    try:
        work = await channel.declare_queue(queue, passive=True)
        found = []
        while (message := await work.get(no_ack=True, fail=False)) is not None:
            assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
            assert message.content_type == "application/json"
            found.append(decode_message(message.body))
        return found
    finally:
        await channel.close()


def ids_of(messages: list[IdsMessage]) -> list[int]:
    return [i for message in messages for i in message.ids]


@every_broker_and_mode
@pytest.mark.parametrize("per_message", [1, 3, 200])
async def test_every_unique_id_is_published_exactly_once(
    start_producer: StartProducer,
    broker: BrokerUnderTest,
    per_message: int,
    publish_mode: PublishMode,
) -> None:
    """A 202 that was not spooled: every message is in the queue (topic) already."""
    producer = await start_producer(
        ids_per_message=per_message, publish_mode=publish_mode, **broker.settings()
    )
    sent = [5, 3, 5, 9, 3, 1, 2, 8, 9, 4, -7, 9223372036854775807]
    unique = [5, 3, 9, 1, 2, 8, 4, -7, 9223372036854775807]

    response = await producer.post({"object_ids": sent})

    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == len(unique) and body["spooled"] is False
    messages = await broker.taken()
    if not broker.ordered:
        messages.sort(key=lambda m: unique.index(m.ids[0]))
    assert ids_of(messages) == unique
    assert all(len(m.ids) <= per_message for m in messages)
    assert len(messages) == -(-len(unique) // per_message)
    assert {m.callback_id for m in messages} == {body["callback_id"]}
    assert len({m.received_at for m in messages}) == 1
    assert all(m.attempt == 0 for m in messages)


@both_publish_modes
async def test_a_message_larger_than_an_amqp_frame_arrives_whole(
    start_producer: StartProducer,
    amqp_connection: aio_pika.abc.AbstractConnection,
    queue_name: str,
    publish_mode: PublishMode,
) -> None:
    producer = await start_producer(ids_per_message=10_000, publish_mode=publish_mode)
    ids = [2**62 + n for n in range(10_000)]  # about 200 kB of JSON, frame_max is 128 kB
    response = await producer.post({"object_ids": ids})
    assert response.json() == {**response.json(), "accepted": 10_000, "spooled": False}
    messages = await queued(amqp_connection, queue_name)
    assert len(messages) == 1 and messages[0].ids == ids


@both_publish_modes
async def test_a_deleted_queue_is_redeclared_and_nothing_is_lost(
    start_producer: StartProducer,
    amqp_connection: aio_pika.abc.AbstractConnection,
    queue_name: str,
    publish_mode: PublishMode,
) -> None:
    """Publishes are mandatory: to a missing queue they come back as a Return, never a drop."""
    producer = await start_producer(broker_max_backoff=0.5, publish_mode=publish_mode)
    channel = await amqp_connection.channel()
    await channel.queue_delete(queue_name)
    await channel.close()

    returned = await producer.post({"object_ids": [11, 12]})

    assert (returned.status_code, returned.json()["spooled"]) == (202, True)
    await until(lambda: producer.core.spool.depth == 0, timeout=15, what="relayed")
    assert ids_of(await queued(amqp_connection, queue_name)) == [11, 12]


async def test_lines_logged_while_handling_a_callback_carry_its_callback_id(
    start_producer: StartProducer,
    amqp_connection: aio_pika.abc.AbstractConnection,
    queue_name: str,
) -> None:
    producer = await start_producer(broker_max_backoff=0.5)
    channel = await amqp_connection.channel()
    await channel.queue_delete(queue_name)  # the publish comes back: the publisher warns
    await channel.close()

    merged = [structlog.contextvars.merge_contextvars]  # as common/log.py configures it
    with structlog.testing.capture_logs(processors=merged) as logs:
        response = await producer.post({"object_ids": [1]})
        assert "callback_id" not in structlog.contextvars.get_contextvars()  # unbound after
        await until(lambda: producer.core.spool.depth == 0, timeout=15, what="relayed")

    callback_id = response.json()["callback_id"]
    by_event = {entry["event"]: entry for entry in logs}
    assert by_event["broker_degraded"]["log_level"] == "warning"
    assert by_event["broker_degraded"]["callback_id"] == callback_id
    assert by_event["callback_spooled"]["callback_id"] == callback_id
    # The relay works for no single callback: nothing it logs claims one.
    assert "callback_id" not in by_event["relayed"]


async def test_an_empty_list_is_accepted_and_publishes_nothing(
    start_producer: StartProducer, broker: BrokerUnderTest
) -> None:
    producer = await start_producer(**broker.settings())
    response = await producer.post({"object_ids": []})
    assert response.status_code == 202
    assert response.json()["accepted"] == 0
    marker = await producer.post({"object_ids": [42]})
    assert ids_of(await broker.taken()) == [42], marker.json()


BAD_REQUESTS: list[tuple[str, dict[str, Any], int, str]] = [
    ("invalid json", {"content": b'{"object_ids": [1,'}, 400, "invalid_json"),
    ("missing key", {"content": b'{"ids": [1]}'}, 422, "invalid_body"),
    ("not an object", {"content": b"[1, 2]"}, 422, "invalid_body"),
    ("not a list", {"content": b'{"object_ids": 1}'}, 422, "invalid_ids"),
    ("float", {"content": b'{"object_ids": [1, 2.0]}'}, 422, "invalid_ids"),
    ("string", {"content": b'{"object_ids": [1, "2"]}'}, 422, "invalid_ids"),
    ("boolean", {"content": b'{"object_ids": [1, false]}'}, 422, "invalid_ids"),
    ("null", {"content": b'{"object_ids": [1, null]}'}, 422, "invalid_ids"),
    ("nested list", {"content": b'{"object_ids": [1, [2]]}'}, 422, "invalid_ids"),
    ("too big", {"content": b'{"object_ids": [1, 9223372036854775808]}'}, 422, "invalid_ids"),
    ("too small", {"content": b'{"object_ids": [-9223372036854775809]}'}, 422, "invalid_ids"),
    (
        "too many ids",
        {"content": orjson.dumps({"object_ids": list(range(51))})},
        413,
        "too_many_ids",
    ),
    (
        "body too large",
        {"content": b'{"object_ids": [' + b"1," * 600 + b"1]}"},
        413,
        "body_too_large",
    ),
]


@pytest.mark.parametrize(
    ("request_kwargs", "status", "error"),
    [pytest.param(kwargs, status, error, id=name) for name, kwargs, status, error in BAD_REQUESTS]
    + [
        pytest.param(
            {"content": b'{"object_ids": [1]}', "headers": {"content-type": "text/plain"}},
            415,
            "unsupported_media_type",
            id="wrong content type",
        ),
        pytest.param(
            {"content": b'{"object_ids": [1]}', "headers": {"content-type": ""}},
            415,
            "unsupported_media_type",
            id="no content type",
        ),
    ],
)
async def test_bad_input_gets_a_json_4xx_and_enqueues_nothing(
    start_producer: StartProducer,
    amqp_connection: aio_pika.abc.AbstractConnection,
    queue_name: str,
    request_kwargs: dict[str, Any],
    status: int,
    error: str,
) -> None:
    producer = await start_producer(max_ids_per_callback=50, max_body_bytes=1000)
    headers = {"content-type": "application/json", **request_kwargs.pop("headers", {})}

    response = await producer.client.post("/callback", headers=headers, **request_kwargs)

    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == error
    assert response.json()["detail"]
    # Publishes go out in order on one channel: once the marker is queued, anything the bad
    # request had published would be queued before it.
    marker = await producer.post({"object_ids": [-1]})
    assert marker.status_code == 202
    assert ids_of(await queued(amqp_connection, queue_name)) == [-1]


async def test_health_ready_and_docs(
    start_producer: StartProducer, broker: BrokerUnderTest
) -> None:
    producer = await start_producer(**broker.settings())
    health = await producer.client.get("/health")
    assert (health.status_code, health.json()) == (200, {"status": "alive"})
    ready = await producer.client.get("/ready")
    assert ready.status_code == 200
    assert ready.json() == {
        "ready": True,
        "broker": "connected",
        "spool_depth": 0,
        "spool_writable": True,
    }
    assert (await producer.client.get("/docs")).status_code == 200
    schema = (await producer.client.get("/openapi.json")).json()
    callback = schema["paths"]["/callback"]["post"]
    assert set(callback["responses"]) >= {"202", "400", "413", "415", "422", "503"}
    body_schema = callback["requestBody"]["content"]["application/json"]["schema"]
    assert body_schema["required"] == ["object_ids"]
    items = body_schema["properties"]["object_ids"]["items"]
    assert (items["type"], items["format"]) == ("integer", "int64")
    accepted = callback["responses"]["202"]["content"]["application/json"]["schema"]
    assert accepted == {"$ref": "#/components/schemas/CallbackAccepted"}
    assert set(schema["components"]["schemas"]["CallbackAccepted"]["properties"]) == {
        "callback_id",
        "accepted",
        "spooled",
    }
    not_found = await producer.client.get("/nope")
    assert not_found.status_code == 404 and not_found.json()["error"] == "not_found"


@both_publish_modes
async def test_broker_away_spools_then_relays_in_order(
    start_producer: StartProducer,
    make_proxy: Callable[[str, int], TcpProxy],
    endpoints: Endpoints,
    amqp_connection: aio_pika.abc.AbstractConnection,
    queue_name: str,
    publish_mode: PublishMode,
) -> None:
    proxy = make_proxy(*endpoints.amqp_host_port)
    producer = await start_producer(
        amqp_uri=amqp_uri_via(endpoints.amqp_uri, proxy),
        broker_max_backoff=0.5,
        publish_mode=publish_mode,
    )
    proxy.cut()
    await until(lambda: producer.core.publisher.state != "connected", timeout=5, what="cut seen")

    started = time.monotonic()
    answers = [await producer.post({"object_ids": [n, n + 1000]}) for n in range(20)]
    assert time.monotonic() - started < 5
    assert {(a.status_code, a.json()["spooled"]) for a in answers} == {(202, True)}
    ready = (await producer.client.get("/ready")).json()
    assert ready["ready"] is True and ready["spool_depth"] == 20
    assert ready["broker"] == "connecting"

    proxy.restore()
    await until(lambda: producer.core.spool.depth == 0, timeout=20, what="spool drained")
    messages = await queued(amqp_connection, queue_name)
    assert ids_of(messages) == [i for n in range(20) for i in (n, n + 1000)]
    assert [m.callback_id for m in messages] == [a.json()["callback_id"] for a in answers]


async def test_broker_unreachable_from_the_start_spools_then_relays_everything(
    start_producer: StartProducer,
    make_proxy: Callable[[str, int], TcpProxy],
    broker: BrokerUnderTest,
) -> None:
    """Nothing answers where the broker should be: callbacks are 202 from the spool at once,
    /ready says so, and once the broker is reachable the relay moves every message to it."""
    proxy = make_proxy(*broker.host_port)
    proxy.cut()
    producer = await start_producer(
        **broker.settings(via=proxy), broker_max_backoff=0.5, wait_connected=False
    )

    started = time.monotonic()
    answers = [await producer.post({"object_ids": [n, n + 1000]}) for n in range(20)]
    assert time.monotonic() - started < 2
    assert {(a.status_code, a.json()["spooled"]) for a in answers} == {(202, True)}
    ready = (await producer.client.get("/ready")).json()
    assert ready == {
        "ready": True,
        "broker": "connecting",
        "spool_depth": 20,
        "spool_writable": True,
    }

    proxy.restore()
    await until(lambda: producer.core.spool.depth == 0, timeout=20, what="spool drained")
    messages = await broker.taken()
    expected = [i for n in range(20) for i in (n, n + 1000)]
    callbacks = [a.json()["callback_id"] for a in answers]
    if broker.ordered:
        assert ids_of(messages) == expected
        assert [m.callback_id for m in messages] == callbacks
    else:
        assert sorted(ids_of(messages)) == sorted(expected)
        assert sorted(m.callback_id for m in messages) == sorted(callbacks)
    assert (await producer.client.get("/ready")).json()["broker"] == "connected"
    after = await producer.post({"object_ids": [-1]})
    assert after.json()["spooled"] is False


async def test_broker_cut_while_connected_spools_then_relays_everything(
    start_producer: StartProducer,
    make_proxy: Callable[[str, int], TcpProxy],
    broker: BrokerUnderTest,
) -> None:
    """Connections reset and refused after the producer connected: the first callback may wait
    PUBLISH_TIMEOUT, the rest spool without waiting; nothing answered 202 is lost."""
    proxy = make_proxy(*broker.host_port)
    producer = await start_producer(**broker.settings(via=proxy), broker_max_backoff=0.5)
    proxy.cut()

    started = time.monotonic()
    answers = [await producer.post({"object_ids": [n]}) for n in range(20)]
    assert time.monotonic() - started < 2
    assert {a.status_code for a in answers} == {202}
    ready = (await producer.client.get("/ready")).json()
    assert ready["ready"] is True and ready["broker"] != "connected"
    spooled = sum(a.json()["spooled"] for a in answers)
    assert spooled == 20 and ready["spool_depth"] == 20

    proxy.restore()
    await until(lambda: producer.core.spool.depth == 0, timeout=20, what="spool drained")
    assert sorted(ids_of(await broker.taken())) == list(range(20))


@every_broker_and_mode
async def test_unconfirmed_publish_times_out_into_the_spool(
    start_producer: StartProducer,
    make_proxy: Callable[[str, int], TcpProxy],
    broker: BrokerUnderTest,
    publish_mode: PublishMode,
) -> None:
    """A stalled network path (or a broker that stops confirming) costs one PUBLISH_TIMEOUT.

    A broker under a resource alarm stops reading publishes just like this; in the standard mode,
    which has no public blocked flag, this is how the alarm shows. Pub/Sub: no message id within
    PUBLISH_TIMEOUT.
    """
    proxy = make_proxy(*broker.host_port)
    producer = await start_producer(
        **broker.settings(via=proxy),
        publish_timeout="200ms",
        relay_publish_timeout="1s",
        broker_max_backoff=0.5,
        publish_mode=publish_mode,
    )
    proxy.blackhole()
    started = time.monotonic()
    first = await producer.post({"object_ids": [1]})
    assert 0.2 <= time.monotonic() - started < 1.0
    assert (first.status_code, first.json()["spooled"]) == (202, True)
    assert producer.core.publisher.state == "degraded"
    # Degraded: later callbacks go to the spool without waiting for a confirm.
    started = time.monotonic()
    second = await producer.post({"object_ids": [2]})
    assert time.monotonic() - started < 0.2
    assert second.json()["spooled"] is True

    proxy.restore()
    await until(lambda: producer.core.spool.depth == 0, timeout=20, what="drained")
    assert {1, 2} <= set(ids_of(await broker.taken()))
    await until(lambda: producer.core.publisher.state == "connected", timeout=10, what="recovered")
    third = await producer.post({"object_ids": [3]})
    assert third.json()["spooled"] is False
    assert ids_of(await broker.taken()) == [3]


async def test_a_broker_resource_alarm_sends_callbacks_to_the_spool(
    start_producer: StartProducer,
    endpoints: Endpoints,
    amqp_connection: aio_pika.abc.AbstractConnection,
    queue_name: str,
) -> None:
    """Connection.Blocked, as the broker sends it on a memory or disk alarm.

    Raising a real alarm would block every other test on the shared broker, so a proxy speaks for
    the broker to this producer alone: what is tested is that the pipeline notices the blocked
    connection and spools instead of waiting for confirms. Only the pipeline reads that flag; the
    standard mode sees an alarm as confirm timeouts (the test above).
    """
    proxy = AmqpFrameProxy(*endpoints.amqp_host_port).start()
    try:
        producer = await start_producer(
            amqp_uri=amqp_uri_via(endpoints.amqp_uri, proxy),
            publish_timeout="2s",
            publish_mode=PublishMode.PIPELINE,
        )
        proxy.send_to_clients(spec.Connection.Blocked(reason="low on memory"))
        await until(lambda: producer.core.publisher.state == "blocked", timeout=5, what="blocked")
        started = time.monotonic()
        blocked = await producer.post({"object_ids": [1, 2]})
        assert time.monotonic() - started < 0.5
        assert (blocked.status_code, blocked.json()["spooled"]) == (202, True)
        assert (await producer.client.get("/ready")).json()["broker"] == "blocked"

        proxy.send_to_clients(spec.Connection.Unblocked())
        await until(lambda: producer.core.spool.depth == 0, timeout=10, what="relayed")
        assert producer.core.publisher.state == "connected"
        after = await producer.post({"object_ids": [3]})
        assert after.json()["spooled"] is False
        assert sorted(ids_of(await queued(amqp_connection, queue_name))) == [1, 2, 3]
    finally:
        proxy.stop()


async def test_start_without_broker_then_spool_fails_gives_503(
    start_producer: StartProducer,
    make_proxy: Callable[[str, int], TcpProxy],
    broker: BrokerUnderTest,
) -> None:
    proxy = make_proxy(*broker.host_port)
    proxy.cut()
    producer = await start_producer(**broker.settings(via=proxy), wait_connected=False)
    ok = await producer.post({"object_ids": [1, 2, 3]})
    assert (ok.status_code, ok.json()["spooled"]) == (202, True)

    await fill_disk(producer.core.spool)
    refused = await producer.post({"object_ids": list(range(2000))})
    assert refused.status_code == 503
    assert refused.json()["error"] == "unavailable"
    assert refused.headers["retry-after"] == "1"
    ready = await producer.client.get("/ready")
    assert ready.status_code == 503
    assert ready.json()["spool_writable"] is False and ready.json()["spool_depth"] == 1


async def until(predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
    async def check() -> bool:
        return predicate()

    await eventually(check, timeout=timeout, what=what)


async def test_metrics_count_callbacks_by_outcome(
    start_producer: StartProducer, broker: BrokerUnderTest
) -> None:
    producer = await start_producer(**broker.settings())
    assert (await producer.post({"object_ids": [1, 2, 2, 3]})).status_code == 202
    assert (await producer.post({"object_ids": ["x"]})).status_code == 422
    metrics = (await producer.client.get("/metrics")).text
    assert 'lastseen_producer_callbacks_total{outcome="confirmed"} 1.0' in metrics
    assert 'lastseen_producer_callbacks_total{outcome="rejected"} 1.0' in metrics
    assert "lastseen_producer_ids_total 3.0" in metrics
    assert "lastseen_producer_spool_depth 0.0" in metrics


@pytest.mark.parametrize("broker", ["pubsub"], indirect=True)
async def test_a_detached_work_subscription_keeps_pubsub_callbacks_in_the_spool(
    broker: PubSubBroker, start_producer: StartProducer, pubsub_emulator: str
) -> None:
    """A topic deleted and created again leaves its old subscription detached: what is published
    reaches no subscription and is dropped. The producer must not answer 202 on that: it stays
    ``connecting`` and spools until the subscription is deleted, then creates it on the topic and
    relays."""
    topology = broker.topology
    publisher = publisher_client(pubsub_emulator)
    try:
        publisher.create_topic(name=topology.topic)
        broker.subscriber.create_subscription(name=topology.work_subscription, topic=topology.topic)
        publisher.delete_topic(topic=topology.topic)
    finally:
        publisher.transport.close()

    with structlog.testing.capture_logs() as logs:
        producer = await start_producer(
            **broker.settings(), broker_max_backoff=0.5, wait_connected=False
        )
        answer = await producer.post({"object_ids": [1, 2]})
        assert (answer.status_code, answer.json()["spooled"]) == (202, True)
        await until(
            lambda: any("SubscriptionDetached" in str(e.get("error")) for e in logs),
            timeout=10,
            what="the detached subscription refused",
        )
    assert producer.core.publisher.state == "connecting"
    assert producer.core.spool.depth == 1

    broker.subscriber.delete_subscription(subscription=topology.work_subscription)
    await until(lambda: producer.core.spool.depth == 0, timeout=15, what="relayed")
    assert sorted(ids_of(await broker.taken())) == [1, 2]
