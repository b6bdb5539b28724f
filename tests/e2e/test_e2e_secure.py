"""The whole suite with every protection on: callbacks signed and bearer-authenticated, RabbitMQ
and PostgreSQL over verified TLS with client certificates, every secret from a file, logs at
debug level. The ledger audit must be as clean as without them, and no log line may hold a
secret."""

from __future__ import annotations

import base64
import os
import ssl
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import asyncpg
import pytest

from common.webhooks import new_secret
from tester.audit import Audit, audit
from tests.support.suite import Suite
from tests.support.tls_servers import TlsServers, tls_servers, unavailable
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e

FAST_TESTER = {
    "TESTER_INTERVAL": "200ms",
    "TESTER_DELAY_MIN": "5ms",
    "TESTER_DELAY_MAX": "60ms",
    "TESTER_ID_RANGE": "1000",
    "ROUTINE_INTERVAL": "500ms",
    "OBJECT_TTL": "1h",
}
DATABASE = "lastseen_e2e_secure"


@pytest.fixture(scope="module")
def servers() -> Iterator[TlsServers]:
    why = unavailable()
    if why:
        pytest.skip(why)
    with tls_servers() as started:
        yield started


def write_secret(directory: Path, name: str, value: str) -> str:
    path = directory / name
    path.write_text(value + "\n")
    path.chmod(0o400)
    return str(path)


async def connect(servers: TlsServers, database: str = "postgres") -> asyncpg.Connection:
    context = ssl.create_default_context(cafile=str(servers.pki.ca))
    return await asyncpg.connect(
        host="localhost",
        port=servers.postgres.port,
        user=servers.postgres.user,
        password=servers.postgres.password,
        database=database,
        ssl=context,
    )


@pytest.fixture
async def database(servers: TlsServers) -> str:
    admin = await connect(servers)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}"')
        await admin.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await admin.close()
    return DATABASE


async def stored(servers: TlsServers) -> dict[int, datetime]:
    connection = await connect(servers, DATABASE)
    try:
        return dict(await connection.fetch("SELECT id, last_seen FROM object"))
    finally:
        await connection.close()


async def test_the_whole_suite_signed_over_tls_with_secrets_from_files(
    servers: TlsServers, database: str, tmp_path: Path
) -> None:
    key = os.urandom(32)
    signing_secret = new_secret(key)
    token = "bearer-" + os.urandom(12).hex()
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    pki = servers.pki
    env = {
        "QUEUE_NAME": "lastseen_e2e_secure",
        "AMQP_URI_FILE": write_secret(secrets_dir, "amqp_uri", servers.rabbit.amqps_uri()),
        "AMQP_TLS_CA": str(pki.ca),
        "AMQP_TLS_CERT": str(pki.client_cert),
        "AMQP_TLS_KEY": str(pki.client_key),
        **{k: v for k, v in servers.postgres.env(database=database).items() if "PASSWORD" not in k},
        "POSTGRES_PASSWORD_FILE": write_secret(secrets_dir, "pg", servers.postgres.password),
        "POSTGRES_SSLMODE": "verify-full",
        "POSTGRES_SSLROOTCERT": str(pki.ca),
        "CALLBACK_SIGNING_SECRETS_FILE": write_secret(secrets_dir, "signing", signing_secret),
        "CALLBACK_BEARER_TOKEN_FILE": write_secret(secrets_dir, "token", token),
        "LOG_LEVEL": "debug",
        "STARTUP_TIMEOUT": "30s",
        **FAST_TESTER,
        "TESTER_CALLBACKS": "25",
    }
    suite = Suite.create(env, tmp_path / "suite")
    try:
        suite.start_all()
        suite.wait_for_callbacks(25, timeout=40)
        records = suite.ledger()
        assert len(records) == 25
        failed = [(r["seq"], r["status"], r["error"]) for r in records if r["status"] != 202]
        assert failed == [], failed

        async def settled() -> Audit | None:
            result = audit(records, await stored(servers))
            return result if result.clean else None

        result = await eventually(settled, timeout=30, interval=0.3, what="ledger audit")
        assert result.online_expected > 0
        assert result.failures == []
    finally:
        suite.stop_all()

    secrets = {
        "AMQP password": servers.rabbit.password,
        "PostgreSQL password": servers.postgres.password,
        "signing secret": signing_secret,
        "signing key": base64.b64encode(key).decode(),
        "bearer token": token,
    }
    assert set(suite.processes) >= {"producer", "consumer_1", "routine", "tester"}
    for name, process in suite.processes.items():
        output = process.output()
        if name != "routine":  # the routine has nothing to say at debug level
            assert '"level":"debug"' in output.replace(" ", ""), f"{name} did not log at debug"
        assert "Traceback" not in output, name
        for what, value in secrets.items():
            assert value not in output, f"{name} logged the {what}"
    producer = suite.processes["producer"].output()
    assert "amqps://lastseen:***@localhost" in producer
    assert "signature+bearer" in producer
