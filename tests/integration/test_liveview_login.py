"""``python -m liveview`` logs in to PostgreSQL where the services do under
``docker-compose.prod.yml``: the password from ``POSTGRES_PASSWORD_FILE`` (``.env`` holds a
placeholder), TLS verified against ``POSTGRES_SSLROOTCERT``, and a ``POSTGRES_HOST`` list whose
first entry does not answer. The server is the tests' own, with ``ssl = on``, scram passwords and
no plain-text connections."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from common.db import migrate
from common.tls import postgres_ssl
from tests.support.certificates import CertificateAuthority
from tests.support.ports import free_port
from tests.support.processes import run_module
from tests.support.tls_servers import SERVER_HOST, SslPostgres, postgres_bin

pytestmark = pytest.mark.integration

SEEN = datetime(2026, 12, 6, 7, 0, tzinfo=UTC)
NOWHERE = "http://127.0.0.1:9"  # discard port: the other sources do not answer


@dataclass(frozen=True)
class Server:
    postgres: SslPostgres
    ca: Path


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    if postgres_bin() is None:
        pytest.skip("PostgreSQL server binaries (initdb) are not installed")
    base = Path(tempfile.mkdtemp(prefix="lastseen-liveview-"))
    base.chmod(0o755)
    authority = CertificateAuthority()
    postgres = SslPostgres(base / "postgres", authority)
    try:
        postgres.start()
        started = Server(postgres, authority.write_ca(base / "ca.crt"))
        asyncio.run(_three_rows(started))
        yield started
    finally:
        postgres.stop()
        shutil.rmtree(base, ignore_errors=True)


async def _three_rows(server: Server) -> None:
    connection = await asyncpg.connect(
        host=SERVER_HOST,
        port=server.postgres.port,
        user=server.postgres.user,
        password=server.postgres.password,
        database="postgres",
        ssl=postgres_ssl("verify-full", server.ca, None, None),
    )
    try:
        await migrate(connection)
        await connection.executemany(
            "INSERT INTO object (id, last_seen) VALUES ($1, $2)",
            [(n, SEEN + timedelta(seconds=n)) for n in range(3)],
        )
    finally:
        await connection.close()


def prod_like(server: Server, workdir: Path) -> dict[str, str]:
    """``.env`` as the production override expects it (a placeholder password), and the
    environment compose gives the services: the password's file."""
    workdir.mkdir(parents=True, exist_ok=True)
    dead_port = free_port()
    (workdir / ".env").write_text(
        "AMQP_URI=amqp://lastseen:placeholder@127.0.0.1:5672/\n"
        "QUEUE_NAME=lastseen_liveview\n"
        f"POSTGRES_HOST={SERVER_HOST},{SERVER_HOST}\n"
        f"POSTGRES_PORT={dead_port},{server.postgres.port}\n"
        "POSTGRES_DB=postgres\n"
        f"POSTGRES_USER={server.postgres.user}\n"
        "POSTGRES_PASSWORD=placeholder-see-the-secret-file\n"
        "POSTGRES_SSLMODE=verify-full\n"
        f"POSTGRES_SSLROOTCERT={server.ca}\n"
    )
    secret = workdir / "postgres_password"
    secret.write_text(server.postgres.password + "\n")
    return {"POSTGRES_PASSWORD_FILE": str(secret)}


def liveview(workdir: Path, env: dict[str, str]) -> dict[str, object]:
    done = run_module(
        "liveview",
        env,
        workdir,
        "--once",
        "--json",
        "--producer",
        NOWHERE,
        "--consumer",
        NOWHERE,
        "--rabbitmq",
        NOWHERE,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    snapshot: dict[str, object] = json.loads(done.stdout)
    return snapshot


def test_the_live_view_logs_in_with_the_secret_file_over_tls(
    server: Server, tmp_path: Path
) -> None:
    snapshot = liveview(tmp_path, prod_like(server, tmp_path))
    sources = snapshot["sources"]
    assert isinstance(sources, dict)
    assert sources["postgresql"] == "ok"
    assert snapshot["rows"] == 3
    assert snapshot["oldest_last_seen"] == SEEN.isoformat()
    assert sources["producer"].startswith("unreachable")  # the others fail in their own cells


def test_without_the_secret_file_the_placeholder_is_refused(server: Server, tmp_path: Path) -> None:
    """The file's password is what logged in above: the placeholder alone is refused."""
    prod_like(server, tmp_path)
    snapshot = liveview(tmp_path, {})
    sources = snapshot["sources"]
    assert isinstance(sources, dict)
    assert sources["postgresql"].startswith("refused: postgresql refused the credentials")
    assert snapshot["rows"] == "refused"


def test_a_certificate_from_another_ca_is_not_trusted(server: Server, tmp_path: Path) -> None:
    env = prod_like(server, tmp_path)
    other = CertificateAuthority("some other CA").write_ca(tmp_path / "other-ca.crt")
    env["POSTGRES_SSLROOTCERT"] = str(other)
    snapshot = liveview(tmp_path, env)
    sources = snapshot["sources"]
    assert isinstance(sources, dict)
    assert sources["postgresql"].startswith("unreachable: postgresql")
    assert "certificate verify failed" in sources["postgresql"]
