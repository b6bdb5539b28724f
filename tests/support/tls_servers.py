"""A RabbitMQ node with a TLS listener and a PostgreSQL instance with ``ssl=on``, both the tests'
own (own ports, own data directories, own accounts with passwords), and the certificates they use.

Certificates are issued for ``localhost`` only: connecting as ``localhost`` verifies, connecting
as ``127.0.0.1`` is a host-name mismatch. A second CA signs nothing either server presents.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.certificates import CertificateAuthority
from tests.support.ports import free_port
from tests.support.rabbit_node import PrivateRabbitNode
from tests.support.waiting import wait_until

SERVER_HOST = "localhost"


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def unavailable() -> str | None:
    """``None`` when both servers can run here, else why not."""
    why = PrivateRabbitNode.available()
    if why:
        return why
    if postgres_bin() is None:
        return "PostgreSQL server binaries (initdb) are not installed"
    return None


@dataclass(frozen=True)
class Pki:
    ca: Path
    wrong_ca: Path
    client_cert: Path
    client_key: Path


class TlsRabbitNode(PrivateRabbitNode):
    """A private node with a TLS listener (peer verification on, client certificate optional)
    and a user of its own."""

    def __init__(self, base_dir: Path, ca: CertificateAuthority) -> None:
        super().__init__(base_dir)
        self.tls_port = free_port()
        self.user = "lastseen"
        self.password = "amqp-" + secrets.token_hex(12)
        self._ca = ca

    def start(self, timeout: float = 60.0) -> TlsRabbitNode:
        certs = self.base_dir / "certs"
        self.base_dir.mkdir(parents=True, exist_ok=True)
        server = self._ca.issue(certs, "rabbit", [SERVER_HOST])
        ca_file = self._ca.write_ca(certs / "ca.crt")
        # RABBITMQ_CONFIG_FILE is <base>/none: the node reads <base>/none.conf.
        (self.base_dir / "none.conf").write_text(
            f"listeners.ssl.1 = 127.0.0.1:{self.tls_port}\n"
            f"ssl_options.cacertfile = {ca_file}\n"
            f"ssl_options.certfile = {server.cert}\n"
            f"ssl_options.keyfile = {server.key}\n"
            "ssl_options.verify = verify_peer\n"
            "ssl_options.fail_if_no_peer_cert = false\n"
        )
        super().start(timeout)
        for command in (
            f"add_user {self.user} {self.password}",
            f"set_permissions -p / {self.user} '.*' '.*' '.*'",
        ):
            done = self._as_rabbitmq(f"{self.ctl_command} {command}", timeout=30)
            if done.returncode != 0:
                raise RuntimeError(f"rabbitmqctl {command.split()[0]} failed: {done.stderr}")
        wait_until(self._tls_port_open, timeout=timeout, what="RabbitMQ TLS listener")
        return self

    @property
    def ctl_command(self) -> str:
        from tests.support.rabbit_node import CTL

        return f"{CTL} -n {self.name}"

    def amqps_uri(self, host: str = SERVER_HOST) -> str:
        return f"amqps://{self.user}:{self.password}@{host}:{self.tls_port}/"

    def _tls_port_open(self) -> bool:
        import socket

        with socket.socket() as probe:
            probe.settimeout(0.5)
            return probe.connect_ex(("127.0.0.1", self.tls_port)) == 0


class SslPostgres:
    """``initdb`` in a directory of its own, ``ssl = on``, TCP only through ``hostssl`` lines
    with scram-sha-256 passwords; run as the ``postgres`` user when the tests run as root."""

    def __init__(self, base_dir: Path, ca: CertificateAuthority) -> None:
        self.base_dir = base_dir
        self.data = base_dir / "data"
        self.port = free_port()
        self.user = "postgres"
        self.password = "pg-" + secrets.token_hex(12)
        self._ca = ca
        bin_dir = postgres_bin()
        if bin_dir is None:
            raise RuntimeError("initdb not found")
        self._bin = bin_dir

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        command = [str(self._bin / args[0]), *args[1:]]
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            user="postgres" if os.geteuid() == 0 else None,
            cwd=self.base_dir,
        )

    def start(self) -> SslPostgres:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        certs = self.base_dir / "certs"
        server = self._ca.issue(certs, "postgres", [SERVER_HOST])
        self._ca.write_ca(certs / "ca.crt")
        password_file = self.base_dir / "pwfile"
        password_file.write_text(self.password + "\n")
        if os.geteuid() == 0:
            for path in [self.base_dir, *self.base_dir.rglob("*")]:
                shutil.chown(path, "postgres", "postgres")
        done = self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            self.user,
            "--auth=scram-sha-256",
            f"--pwfile={password_file}",
            "-E",
            "UTF8",
            "--no-sync",
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr}")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.base_dir}'\n"
                f"ssl = on\nssl_cert_file = '{server.cert}'\nssl_key_file = '{server.key}'\n"
                "fsync = off\nshared_buffers = 16MB\nmax_connections = 40\n"
            )
        (self.data / "pg_hba.conf").write_text(
            "local all all scram-sha-256\n"
            "hostssl all all 127.0.0.1/32 scram-sha-256\n"
            "hostnossl all all 0.0.0.0/0 reject\n"
        )
        done = self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.base_dir / "log"), "-w", "start"
        )
        if done.returncode != 0:
            log = (self.base_dir / "log").read_text(errors="replace")
            raise RuntimeError(f"pg_ctl start failed: {done.stderr}\n{log}")
        return self

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def env(self, host: str = SERVER_HOST, database: str = "postgres") -> dict[str, str]:
        return {
            "POSTGRES_HOST": host,
            "POSTGRES_PORT": str(self.port),
            "POSTGRES_DB": database,
            "POSTGRES_USER": self.user,
            "POSTGRES_PASSWORD": self.password,
        }


@dataclass
class TlsServers:
    rabbit: TlsRabbitNode
    postgres: SslPostgres
    pki: Pki


@contextlib.contextmanager
def tls_servers() -> Iterator[TlsServers]:
    """Both servers, and the client-side files (CA, a wrong CA, a client certificate)."""
    base = Path(tempfile.mkdtemp(prefix="lastseen-tls-"))
    base.chmod(0o755)
    ca = CertificateAuthority()
    client_dir = base / "client"
    client_dir.mkdir()
    client = ca.issue(client_dir, "client", ["lastseen-client"], client=True)
    pki = Pki(
        ca=ca.write_ca(client_dir / "ca.crt"),
        wrong_ca=CertificateAuthority("some other CA").write_ca(client_dir / "wrong-ca.crt"),
        client_cert=client.cert,
        client_key=client.key,
    )
    rabbit = TlsRabbitNode(base / "rabbit", ca)
    postgres = SslPostgres(base / "postgres", ca)
    try:
        rabbit.start()
        postgres.start()
        yield TlsServers(rabbit, postgres, pki)
    finally:
        with contextlib.suppress(Exception):
            postgres.stop()
        with contextlib.suppress(Exception):
            rabbit.stop()
        shutil.rmtree(base, ignore_errors=True)
