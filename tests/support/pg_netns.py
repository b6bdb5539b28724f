"""The cluster tier's PostgreSQL primary and synchronous standby, each on a test host of its own
(:mod:`tests.support.netns`), so the primary can be cut off from its standby while the clients
still reach it: every commit then waits for a standby that cannot answer.

Both listen on their host's address on the standard port (each namespace has its own) and trust
the test subnet, replication included; nothing outside the namespaces can reach them.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.netns import SUBNET, Host
from tests.support.pg_pair import BIN, USER, PgPair, PgServer, chown_postgres, run_as_postgres
from tests.support.waiting import wait_until

PORT = 5432


class NamespacedPgServer(PgServer):
    def __init__(self, data_dir: Path, host: Host) -> None:
        super().__init__(data_dir, PORT)
        self.host = host
        self.socket_dir = data_dir.parent / f"socket-{host.name}"
        self.log = data_dir.parent / f"postgres-{host.name}.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@{self.host.address}:{self.port}/{database}"

    def pg_ctl(self, *arguments: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        command = ["runuser", "-u", USER, "--", str(BIN / "pg_ctl"), "-D", str(self.data_dir)]
        return subprocess.run(
            self.host.command(*command, *arguments),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd="/tmp",
        )

    def start(self) -> None:
        self.socket_dir.mkdir(exist_ok=True)
        chown_postgres(self.socket_dir)
        options = f"-p {self.port} -k {self.socket_dir} -c listen_addresses={self.host.address}"
        done = self.pg_ctl("-o", options, "-l", str(self.log), "-w", "start")
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl start: {done.stdout}{done.stderr}{self.read_log()}")

    def psql(self, sql: str, database: str = "postgres") -> str:
        where = ["-h", self.host.address, "-p", str(self.port), "-d", database]
        options = ["-XAtqv", "ON_ERROR_STOP=1", "-c", sql]
        done = run_as_postgres([str(BIN / "psql"), *where, *options], timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"psql {sql!r}: {done.stderr}")
        return done.stdout.strip()


class NamespacedPgPair(PgPair):
    def __init__(self, base_dir: Path, primary: Host, standby: Host) -> None:
        self.base_dir = base_dir
        self.primary: NamespacedPgServer = NamespacedPgServer(base_dir / "primary", primary)
        self.standby: NamespacedPgServer = NamespacedPgServer(base_dir / "standby", standby)

    def start(self, database: str) -> NamespacedPgPair:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        chown_postgres(self.base_dir)
        initdb = run_as_postgres(
            [str(BIN / "initdb"), "-D", str(self.primary.data_dir), "-U", USER, "-A", "trust",
             "--no-sync"],
            timeout=120,
        )  # fmt: skip
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb: {initdb.stdout}{initdb.stderr}")
        with (self.primary.data_dir / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {SUBNET} trust\nhost replication all {SUBNET} trust\n")
        self.primary.start()
        # Before the base backup, as in PgPair: the standby inherits it.
        self.primary.psql("ALTER SYSTEM SET synchronous_standby_names = '*'")
        backup = run_as_postgres(
            [str(BIN / "pg_basebackup"), "-h", self.primary.host.address, "-p", str(PORT), "-U",
             USER, "-D", str(self.standby.data_dir), "-R", "-X", "stream", "--no-sync"],
            timeout=120,
        )  # fmt: skip
        if backup.returncode != 0:
            raise RuntimeError(f"pg_basebackup: {backup.stderr}")
        self.standby.start()
        self.primary.psql("SELECT pg_reload_conf()")
        wait_until(self.synchronous, timeout=30, interval=0.1, what="standby synchronous")
        self.primary.psql(f'CREATE DATABASE "{database}"')
        return self

    def synchronous(self) -> bool:
        return self.primary.psql("SELECT sync_state FROM pg_stat_replication") == "sync"

    @property
    def hosts(self) -> str:
        return ",".join(server.host.address for server in (self.primary, self.standby))
