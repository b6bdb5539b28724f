"""TLS against real servers the tests start with certificates they make: a RabbitMQ node with a
TLS listener and a PostgreSQL with ``ssl = on`` that refuses plain connections."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.support.ports import free_port
from tests.support.processes import Spawn, run_module
from tests.support.producer import producer_env, wait_broker_connected
from tests.support.tls_servers import TlsServers, tls_servers, unavailable

pytestmark = pytest.mark.integration

QUEUE = "lastseen_tls"
REFUSED = "TLS certificate refused"


@pytest.fixture(scope="module")
def servers() -> Iterator[TlsServers]:
    why = unavailable()
    if why:
        pytest.skip(why)
    with tls_servers() as started:
        yield started


def amqp_env(
    servers: TlsServers, host: str = "localhost", ca: Path | None = None
) -> dict[str, str]:
    return {
        "AMQP_URI": servers.rabbit.amqps_uri(host),
        "QUEUE_NAME": QUEUE,
        "AMQP_TLS_CA": str(ca or servers.pki.ca),
        "AMQP_TLS_CERT": str(servers.pki.client_cert),
        "AMQP_TLS_KEY": str(servers.pki.client_key),
    }


def postgres_env(
    servers: TlsServers,
    host: str = "localhost",
    rootcert: Path | None = None,
    mode: str = "verify-full",
) -> dict[str, str]:
    env = {**servers.postgres.env(host), "POSTGRES_SSLMODE": mode}
    if mode != "require":
        env["POSTGRES_SSLROOTCERT"] = str(rootcert or servers.pki.ca)
    return env


def consumer_env(servers: TlsServers, **amqp: object) -> dict[str, str]:
    return {
        **amqp_env(servers, **amqp),  # type: ignore[arg-type]
        **postgres_env(servers),
        "TESTER_ENDPOINT": "http://127.0.0.1:9",
        "STARTUP_TIMEOUT": "30s",
    }


def test_services_connect_with_verification(
    servers: TlsServers, spawn: Spawn, tmp_path: Path
) -> None:
    port = free_port()
    producer = spawn(
        "producer", producer_env("", "", tmp_path / "spool.db", port, **amqp_env(servers))
    )
    wait_broker_connected(producer, port)
    answer = httpx.post(
        f"http://127.0.0.1:{port}/callback",
        content=orjson.dumps({"object_ids": [1, 2]}),
        headers={"Content-Type": "application/json"},
        timeout=5,
    )
    assert answer.status_code == 202
    assert answer.json()["spooled"] is False, "confirmed by the broker over TLS"

    routine = spawn("routine", {**postgres_env(servers), "ROUTINE_INTERVAL": "1s"})
    consumer = spawn("consumer", consumer_env(servers))
    routine.wait_for_log('"routine_started"')
    consumer.wait_for_log('"subscribed"')
    for process in (producer, routine, consumer):
        assert REFUSED not in process.output()
        assert servers.rabbit.password not in process.output()
        assert servers.postgres.password not in process.output()


@pytest.mark.parametrize(
    ("case", "module", "expected"),
    [
        ("broker, wrong CA", "consumer", "AMQP_TLS_CA"),
        ("broker, wrong host", "consumer", "AMQP_URI's host name"),
        ("database, wrong CA", "routine", "POSTGRES_SSLROOTCERT"),
        ("database, wrong host", "routine", "POSTGRES_HOST"),
    ],
)
def test_a_wrong_ca_or_host_name_is_refused_at_start_in_one_line(
    servers: TlsServers, tmp_path: Path, case: str, module: str, expected: str
) -> None:
    wrong_ca = "wrong CA" in case
    host = "localhost" if wrong_ca else "127.0.0.1"
    if module == "consumer":
        env = consumer_env(servers, host=host, ca=servers.pki.wrong_ca if wrong_ca else None)
    else:
        env = postgres_env(servers, host=host, rootcert=servers.pki.wrong_ca if wrong_ca else None)
    env["STARTUP_TIMEOUT"] = "60s"
    done = run_module(module, env, tmp_path, timeout=30)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    refusals = [line for line in output.splitlines() if REFUSED in line]
    assert len(refusals) == 1, output
    assert expected in refusals[0]
    reasons = (
        ("self-signed certificate in certificate chain", "unable to get local issuer certificate")
        if wrong_ca
        else ("IP address mismatch",)
    )
    assert any(reason in refusals[0] for reason in reasons), refusals[0]
    assert "Traceback" not in output
    assert '"connect_retry"' not in output, "a refused certificate is not retried"
    errors = [line for line in output.splitlines() if '"level":"error"' in line.replace(" ", "")]
    assert errors == refusals, "the refusal is the only error line"


def test_the_producer_says_once_why_and_keeps_answering_from_the_spool(
    servers: TlsServers, spawn: Spawn, tmp_path: Path
) -> None:
    port = free_port()
    env = amqp_env(servers, ca=servers.pki.wrong_ca)
    producer = spawn("producer", producer_env("", "", tmp_path / "spool.db", port, **env))
    producer.wait_for_log('"broker_tls_refused"')
    answer = httpx.post(
        f"http://127.0.0.1:{port}/callback",
        content=orjson.dumps({"object_ids": [3]}),
        headers={"Content-Type": "application/json"},
        timeout=5,
    )
    assert answer.status_code == 202
    assert answer.json()["spooled"] is True
    assert producer.output().count('"broker_tls_refused"') == 1
    assert "AMQP_TLS_CA" in producer.output()


def test_sslmode_require_without_a_root_certificate_encrypts_without_verifying(
    servers: TlsServers, spawn: Spawn
) -> None:
    # 127.0.0.1 is not in the certificate: only a mode that does not verify gets in.
    routine = spawn("routine", postgres_env(servers, host="127.0.0.1", mode="require"))
    routine.wait_for_log('"routine_started"')


def test_plain_text_is_refused_by_the_server(servers: TlsServers, tmp_path: Path) -> None:
    env = {**postgres_env(servers, mode="disable"), "STARTUP_TIMEOUT": "10s"}
    done = run_module("routine", env, tmp_path, timeout=30)
    assert done.returncode == 1
    assert "no encryption" in done.stdout + done.stderr
