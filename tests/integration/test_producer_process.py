"""``python -m producer`` as a real process: broker cut under load, kill -9 with a full spool,
200 concurrent callbacks, SIGTERM, body limits on the wire, start-up errors. Tests taking
``broker`` run once against RabbitMQ, once against the Pub/Sub emulator."""

from __future__ import annotations

import asyncio
import http.client
import signal
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx
import pytest

from producer.confirms import PublishMode
from tests.support.grpc_refuser import refusing_server
from tests.support.link_shaper import Link
from tests.support.ports import free_port
from tests.support.processes import Spawn, run_module
from tests.support.producer import (
    accepts_connections,
    producer_env,
    ready_state,
    start_connected,
    wait_broker_connected,
)
from tests.support.producer_brokers import BrokerUnderTest, every_broker_and_mode, taken_until
from tests.support.proxy import TcpProxy
from tests.support.services import Endpoints
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration


@every_broker_and_mode
async def test_kill_9_with_a_full_spool_then_restart_publishes_it(
    spawn: Spawn,
    make_proxy: Callable[[str, int], TcpProxy],
    endpoints: Endpoints,
    broker: BrokerUnderTest,
    queue_name: str,
    tmp_path: Path,
    publish_mode: PublishMode,
) -> None:
    proxy = make_proxy(*broker.host_port)
    proxy.cut()  # the broker is unreachable from the start
    spool = tmp_path / "spool" / "spool.sqlite3"
    port = free_port()
    first = spawn(
        "producer",
        producer_env(endpoints.amqp_uri, queue_name, spool, port, **broker.env(via=proxy)),
    )
    first.wait_ready(lambda: ready_state(port))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=1.0) as client:
        answers = [
            await client.post("/callback", json={"object_ids": [n, -n - 1]}) for n in range(30)
        ]
    assert {(a.status_code, a.json()["spooled"]) for a in answers} == {(202, True)}
    assert ready_state(port) == {
        "ready": True,
        "broker": "connecting",
        "spool_depth": 30,
        "spool_writable": True,
    }

    first.kill()

    port = free_port()
    second = spawn(
        "producer",
        producer_env(
            endpoints.amqp_uri,
            queue_name,
            spool,
            port,
            PUBLISH_MODE=publish_mode,
            **broker.env(),
        ),
    )
    wait_broker_connected(second, port)
    assert '"spool_opened"' in second.output() and '"depth":30' in second.output()
    expected = {i for n in range(30) for i in (n, -n - 1)}
    taken = await taken_until(broker, expected, timeout=20)
    assert sorted(taken) == sorted(expected)  # nothing twice: each entry relayed once
    await eventually(lambda: (ready_state(port) or {}).get("spool_depth") == 0, timeout=10)


@every_broker_and_mode
async def test_200_concurrent_callbacks_of_200_ids(
    spawn: Spawn,
    endpoints: Endpoints,
    broker: BrokerUnderTest,
    queue_name: str,
    tmp_path: Path,
    publish_mode: PublishMode,
) -> None:
    _, port = start_connected(
        spawn, endpoints, queue_name, tmp_path, PUBLISH_MODE=publish_mode, **broker.env()
    )
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=10
    ) as client:
        responses = await asyncio.gather(
            *(
                client.post("/callback", json={"object_ids": list(range(c * 200, c * 200 + 200))})
                for c in range(200)
            )
        )
    assert [r.status_code for r in responses] == [202] * 200
    assert all(r.json()["accepted"] == 200 for r in responses)
    taken = await taken_until(broker, set(range(40_000)), timeout=30)
    assert sorted(taken) == list(range(40_000))


async def test_sigterm_finishes_the_request_in_flight_then_exits_0(
    spawn: Spawn,
    endpoints: Endpoints,
    broker: BrokerUnderTest,
    queue_name: str,
    tmp_path: Path,
) -> None:
    process, port = start_connected(spawn, endpoints, queue_name, tmp_path, **broker.env())
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = b'{"object_ids": [7, 8, 9]}'
    writer.write(
        b"POST /callback HTTP/1.1\r\nHost: producer\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body[:10])
    )
    await writer.drain()
    # The server reads sockets in order on one loop: once a later request is answered, the
    # half-sent request's headers have been parsed and it is in flight.
    assert ready_state(port) is not None

    process.signal(signal.SIGTERM)
    # Shutdown has begun once the listening socket is closed; the half-read request is in flight.
    await eventually(lambda: not accepts_connections(port), timeout=5, what="stopped")
    assert process.running()
    writer.write(body[10:])
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), timeout=5)
    writer.close()

    assert status_line.startswith(b"HTTP/1.1 202")
    assert await asyncio.to_thread(process.wait, 15) == 0
    assert '"producer_stopped"' in process.output()
    assert sorted(i for m in await broker.taken() for i in m.ids) == [7, 8, 9]


async def test_sigterm_with_a_spool_drains_it_within_the_grace_then_exits_0(
    spawn: Spawn,
    make_proxy: Callable[[str, int], TcpProxy],
    endpoints: Endpoints,
    broker: BrokerUnderTest,
    queue_name: str,
    tmp_path: Path,
) -> None:
    """The broker comes back over a slow link while the relay still has work: SIGTERM stops the
    HTTP server at once, the relay moves the rest of the spool within SHUTDOWN_GRACE."""
    proxy = make_proxy(*broker.host_port)
    proxy.cut()
    port = free_port()
    env = producer_env(
        endpoints.amqp_uri,
        queue_name,
        tmp_path / "s.db",
        port,
        RELAY_BATCH_SIZE="1",
        SHUTDOWN_GRACE="20s",
        **broker.env(via=proxy),
    )
    process = spawn("producer", env).wait_ready(lambda: ready_state(port))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=1.0) as client:
        answers = [await client.post("/callback", json={"object_ids": [n]}) for n in range(40)]
    assert {(a.status_code, a.json()["spooled"]) for a in answers} == {(202, True)}

    # One message per relay round, each waiting ≥ 100 ms for its answer: ≥ 4 s to drain.
    proxy.shape(Link(latency=0.05))
    proxy.restore()
    wait_broker_connected(process, port)
    before = ready_state(port) or {}
    process.signal(signal.SIGTERM)
    started = time.monotonic()
    await eventually(lambda: not accepts_connections(port), timeout=5, what="HTTP stopped")

    assert await asyncio.to_thread(process.wait, 25) == 0
    assert time.monotonic() - started < 20
    assert before["spool_depth"] > 0, "the relay had finished before SIGTERM: nothing to test"
    assert '"spool_drained":true' in process.output()
    assert sorted(await taken_until(broker, set(range(40)), timeout=10)) == list(range(40))


async def test_body_limit_is_enforced_while_reading(
    spawn: Spawn, endpoints: Endpoints, queue_name: str, tmp_path: Path
) -> None:
    port = free_port()
    env = producer_env(
        endpoints.amqp_uri, queue_name, tmp_path / "s.db", port, MAX_BODY_BYTES="1000"
    )
    spawn("producer", env).wait_ready(lambda: ready_state(port))

    # A chunked body that never ends: the 413 must come after ~1000 bytes, not at the end.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /callback HTTP/1.1\r\nHost: producer\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b'{"object_ids": [' + b"1," * 200
    for _ in range(4):
        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), timeout=5)
    writer.close()
    assert status_line.startswith(b"HTTP/1.1 413")

    # A declared length over the limit is refused before any body byte is sent.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /callback HTTP/1.1\r\nHost: producer\r\nContent-Type: application/json\r\n"
        b"Content-Length: 5000000\r\n\r\n"
    )
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), timeout=5)
    # Headers and body may arrive in separate segments: read the body by its declared length.
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    body = await asyncio.wait_for(reader.readexactly(length), timeout=5)
    writer.close()
    assert status_line.startswith(b"HTTP/1.1 413")
    assert b'"error":"body_too_large"' in body


def test_a_kept_alive_connection_outlives_the_testers_interval(
    spawn: Spawn, endpoints: Endpoints, queue_name: str, tmp_path: Path
) -> None:
    """The tester posts every 5 s on one kept-alive connection; a server that closes idle
    connections after 5 s races it and the callback fails with a read error."""
    _, port = start_connected(spawn, endpoints, queue_name, tmp_path)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        statuses = []
        sockets = []
        for attempt in range(2):
            if attempt:
                time.sleep(5.5)  # the idle period under test, longer than the tester's interval
            connection.request(
                "POST", "/callback", b'{"object_ids":[1,2]}', {"Content-Type": "application/json"}
            )
            sockets.append(connection.sock)
            response = connection.getresponse()
            response.read()
            statuses.append(response.status)
        assert statuses == [202, 202]
        assert sockets[0] is sockets[1], "the server closed the kept-alive connection"
    finally:
        connection.close()


def test_bad_configuration_exits_2_naming_the_variable(tmp_path: Path) -> None:
    result = run_module(
        "producer",
        {
            "AMQP_URI": "amqp://x/",
            "QUEUE_NAME": "q",
            "PRODUCER_PORT": "ninety",
            "PUBLISH_TIMEOUT": "-1s",
        },
        tmp_path,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "PRODUCER_PORT" in lines[0] and "PUBLISH_TIMEOUT" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_unusable_spool_path_exits_1_with_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run_module(
        "producer",
        {
            "AMQP_URI": "amqp://guest:guest@127.0.0.1:1/",
            "QUEUE_NAME": "q",
            "PRODUCER_PORT": str(free_port()),
            "SPOOL_PATH": str(blocker / "spool.sqlite3"),
            "LOG_FORMAT": "json",
        },
        tmp_path,
    )
    assert result.returncode == 1
    assert '"spool_unavailable"' in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def refused_on_pubsub(tmp_path: Path, **env: str) -> str:
    """Run the producer on Pub/Sub with ``env``; assert it exits 1 with one error line and no
    traceback; return that line."""
    result = run_module(
        "producer",
        {
            "BROKER": "pubsub",
            "PUBSUB_PROJECT_ID": "lastseen-test",
            "QUEUE_NAME": "lastseen",
            "PRODUCER_PORT": str(free_port()),
            "SPOOL_PATH": str(tmp_path / "spool.sqlite3"),
            "LOG_FORMAT": "json",
            **env,
        },
        tmp_path,
    )
    assert result.returncode == 1
    errors = [line for line in result.stdout.splitlines() if '"level":"error"' in line]
    assert len(errors) == 1, result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    return errors[0]


def test_unusable_pubsub_credentials_exit_1_with_one_line(tmp_path: Path) -> None:
    """GOOGLE_APPLICATION_CREDENTIALS naming a file that is no credential: refused at start, one
    error line, exit 1 (retrying cannot fix it)."""
    bad = tmp_path / "credentials.json"
    bad.write_text("not a credential")
    error = refused_on_pubsub(
        tmp_path, PUBSUB_EMULATOR_HOST="", GOOGLE_APPLICATION_CREDENTIALS=str(bad)
    )
    assert '"broker_refused"' in error and "GOOGLE_APPLICATION_CREDENTIALS" in error
    assert str(bad) in error


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED]
)
def test_pubsub_refusing_the_producer_exits_1_with_one_line(
    tmp_path: Path, code: grpc.StatusCode
) -> None:
    """Credentials the service does not accept (or without the publisher role): the producer
    stops as on SIGTERM and exits 1, since retrying cannot help."""
    with refusing_server(code) as host:
        error = refused_on_pubsub(tmp_path, PUBSUB_EMULATOR_HOST=host)
    assert '"event":"broker_refused"' in error and f"refused by the test ({code.name})" in error
