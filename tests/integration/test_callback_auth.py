"""The producer as a process with callback authentication on: every bad request is 401 with a
JSON reason, and nothing reaches the real broker or the spool."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from pathlib import Path

import aio_pika
import httpx
import orjson
import pytest

from common.webhooks import new_secret, sign
from tests.support.ports import free_port
from tests.support.processes import ServiceProcess, Spawn
from tests.support.producer import producer_env, queued_ids, ready_state, wait_broker_connected
from tests.support.services import Endpoints

pytestmark = pytest.mark.integration

KEY, NEXT_KEY = b"A" * 32, b"B" * 32
SECRETS = f"{new_secret(KEY)} {new_secret(NEXT_KEY)}"
TOKEN = "tok-" + "x" * 20
BODY = orjson.dumps({"object_ids": [2, 4, 6]})


def start_producer(
    spawn: Spawn, endpoints: Endpoints, queue_name: str, tmp_path: Path, **auth: str
) -> tuple[ServiceProcess, str]:
    port = free_port()
    env = producer_env(endpoints.amqp_uri, queue_name, tmp_path / "spool.db", port, **auth)
    process = spawn("producer", env)
    wait_broker_connected(process, port)
    return process, f"http://127.0.0.1:{port}"


def post(url: str, headers: dict[str, str], body: bytes = BODY) -> httpx.Response:
    return httpx.post(
        f"{url}/callback",
        content=body,
        headers={"Content-Type": "application/json", **headers},
        timeout=5,
    )


def signed(key: bytes = KEY, timestamp: float | None = None, body: bytes = BODY) -> dict[str, str]:
    return sign([key], "msg_test", int(time.time() if timestamp is None else timestamp), body)


def tampered(change: Callable[[dict[str, str]], None]) -> dict[str, str]:
    headers = signed()
    change(headers)
    return headers


def _drop(name: str) -> Callable[[dict[str, str]], None]:
    return lambda headers: headers.pop(name)


def _set(name: str, value: str) -> Callable[[dict[str, str]], None]:
    return lambda headers: headers.update({name: value})


def _versioned(version: str) -> Callable[[dict[str, str]], None]:
    def change(headers: dict[str, str]) -> None:
        headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", f"{version},")

    return change


BAD_SIGNATURES: dict[str, tuple[dict[str, str], bytes, str]] = {
    "no headers": ({}, BODY, "missing_signature"),
    "no signature header": (tampered(_drop("webhook-signature")), BODY, "missing_signature"),
    "no id header": (tampered(_drop("webhook-id")), BODY, "missing_signature"),
    "bad base64": (tampered(_set("webhook-signature", "v1,@@@not-base64")), BODY, "invalid"),
    "wrong secret": (signed(key=b"C" * 32), BODY, "invalid_signature"),
    "body changed by one byte": (signed(), BODY.replace(b"6", b"8"), "invalid_signature"),
    "timestamp too old": (signed(timestamp=time.time() - 400), BODY, "stale_timestamp"),
    "timestamp in the future": (signed(timestamp=time.time() + 400), BODY, "stale_timestamp"),
    "unknown version": (tampered(_versioned("v9")), BODY, "unsupported_signature"),
}


async def assert_nothing_queued_or_spooled(
    amqp_connection: aio_pika.abc.AbstractConnection, queue_name: str, url: str
) -> None:
    assert await queued_ids(amqp_connection, queue_name) == []
    state = ready_state(int(url.rsplit(":", 1)[1]))
    assert state is not None and state["spool_depth"] == 0, state


async def test_bad_signatures_get_401_and_nothing_is_queued(
    spawn: Spawn,
    endpoints: Endpoints,
    queue_name: str,
    tmp_path: Path,
    amqp_connection: aio_pika.abc.AbstractConnection,
) -> None:
    _, url = start_producer(
        spawn,
        endpoints,
        queue_name,
        tmp_path,
        CALLBACK_SIGNING_SECRETS=SECRETS,
        CALLBACK_SIGNATURE_TOLERANCE="5m",
    )
    for case, (headers, body, code) in BAD_SIGNATURES.items():
        answer = post(url, headers, body)
        assert answer.status_code == 401, (case, answer.text)
        assert answer.headers["content-type"] == "application/json"
        assert answer.json()["error"].startswith(code), (case, answer.json())
        assert answer.json()["detail"], case
    await assert_nothing_queued_or_spooled(amqp_connection, queue_name, url)

    # Refused from its headers, before its body was read: the kept-alive connection still
    # carries the next request correctly.
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        big = orjson.dumps({"object_ids": list(range(5000))})
        plain = {"Content-Type": "application/json"}
        assert (await client.post("/callback", content=big, headers=plain)).status_code == 401
        answer = await client.post("/callback", content=BODY, headers={**plain, **signed()})
        assert answer.status_code == 202, answer.text
    assert sorted(await queued_ids(amqp_connection, queue_name)) == [2, 4, 6]

    # Rotation: a callback signed with either accepted secret goes through.
    for key in (KEY, NEXT_KEY):
        answer = post(url, signed(key=key))
        assert answer.status_code == 202, answer.text
        assert answer.json()["accepted"] == 3
    assert sorted(await queued_ids(amqp_connection, queue_name)) == [2, 2, 4, 4, 6, 6]


async def test_bearer_token_mode(
    spawn: Spawn,
    endpoints: Endpoints,
    queue_name: str,
    tmp_path: Path,
    amqp_connection: aio_pika.abc.AbstractConnection,
) -> None:
    _, url = start_producer(spawn, endpoints, queue_name, tmp_path, CALLBACK_BEARER_TOKEN=TOKEN)
    basic = base64.b64encode(f"user:{TOKEN}".encode()).decode()
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {basic}"},
        {"Authorization": f"Bearer {TOKEN}x"},
    ):
        answer = post(url, headers)
        assert answer.status_code == 401, (headers, answer.text)
        assert answer.json()["error"] == "unauthorized"
        assert answer.headers["www-authenticate"] == "Bearer"
    await assert_nothing_queued_or_spooled(amqp_connection, queue_name, url)
    answer = post(url, {"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 202, answer.text
    assert sorted(await queued_ids(amqp_connection, queue_name)) == [2, 4, 6]


async def test_without_settings_an_unsigned_callback_is_accepted_as_before(
    spawn: Spawn,
    endpoints: Endpoints,
    queue_name: str,
    tmp_path: Path,
    amqp_connection: aio_pika.abc.AbstractConnection,
) -> None:
    process, url = start_producer(spawn, endpoints, queue_name, tmp_path)
    assert post(url, {}).status_code == 202
    assert sorted(await queued_ids(amqp_connection, queue_name)) == [2, 4, 6]
    assert '"callback_auth":"off"' in process.output().replace(" ", "")
