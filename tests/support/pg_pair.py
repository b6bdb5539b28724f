"""A PostgreSQL primary and a synchronous standby of the test's own, beside the machine's cluster.

``initdb`` and ``pg_basebackup -R`` into test-owned folders, each server on a free port with its
socket in its own folder. PostgreSQL refuses to run as root, so every command runs as the
``postgres`` user (``runuser``) when the tests run as root. Measured here: initdb, start,
basebackup and start of the standby take ~1.5 s together.

The failover procedure the docs describe is :meth:`PgPair.fail_over`: the primary is gone, the
standby is promoted, and then **the failover procedure clears** ``synchronous_standby_names`` on
the new primary. A promoted standby keeps the setting it copied from the primary, and with no
standby of its own every commit would wait forever.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
from pathlib import Path

from tests.support.ports import free_port
from tests.support.waiting import wait_until

BIN = Path("/usr/lib/postgresql/15/bin")
USER = "postgres"


class PgServer:
    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir = data_dir
        self.port = port
        self.socket_dir = data_dir.parent / f"socket-{port}"
        self.log = data_dir.parent / f"postgres-{port}.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def pg_ctl(self, *arguments: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return run_as_postgres([str(BIN / "pg_ctl"), "-D", str(self.data_dir), *arguments], timeout)

    def start(self) -> None:
        self.socket_dir.mkdir(exist_ok=True)
        chown_postgres(self.socket_dir)
        options = f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1"
        done = self.pg_ctl("-o", options, "-l", str(self.log), "-w", "start")
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl start: {done.stdout}{done.stderr}{self.read_log()}")

    def psql(self, sql: str, database: str = "postgres") -> str:
        done = run_as_postgres(
            [
                str(BIN / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-d",
                database,
                "-XAtq",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
            timeout=30,
        )
        if done.returncode != 0:
            raise RuntimeError(f"psql {sql!r}: {done.stderr}")
        return done.stdout.strip()

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def kill(self) -> None:
        """kill -9 the postmaster and every backend, as a machine crash would."""
        pid = self.postmaster_pid()
        if pid is None:
            return
        for child in children_of(pid):
            _kill(child)
        _kill(pid)
        wait_until(lambda: not _alive(pid), timeout=10, what="postmaster gone")

    def stop(self) -> None:
        if self.postmaster_pid() is not None and _alive(self.postmaster_pid() or 0):
            self.pg_ctl("-m", "immediate", "-w", "stop", timeout=30)

    def read_log(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class PgPair:
    """``primary`` with ``standby`` streaming synchronously from it."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.primary = PgServer(base_dir / "primary", free_port())
        self.standby = PgServer(base_dir / "standby", free_port())

    @staticmethod
    def available() -> str | None:
        if not (BIN / "initdb").exists():
            return f"{BIN}/initdb is not installed"
        try:
            pwd.getpwnam(USER)
        except KeyError:
            return f"no {USER} user to run PostgreSQL as"
        return None

    @property
    def servers(self) -> list[PgServer]:
        return [self.primary, self.standby]

    def start(self, database: str) -> PgPair:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        chown_postgres(self.base_dir)
        initdb = run_as_postgres(
            [
                str(BIN / "initdb"),
                "-D",
                str(self.primary.data_dir),
                "-U",
                USER,
                "-A",
                "trust",
                "--no-sync",
            ],
            timeout=120,
        )
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb: {initdb.stdout}{initdb.stderr}")
        self.primary.start()
        # In postgresql.auto.conf before the base backup: the standby inherits it, which is why
        # fail_over() has to clear it on the promoted standby.
        self.primary.psql("ALTER SYSTEM SET synchronous_standby_names = '*'")
        backup = run_as_postgres(
            [
                str(BIN / "pg_basebackup"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.primary.port),
                "-U",
                USER,
                "-D",
                str(self.standby.data_dir),
                "-R",
                "-X",
                "stream",
                "--no-sync",
            ],
            timeout=120,
        )
        if backup.returncode != 0:
            raise RuntimeError(f"pg_basebackup: {backup.stderr}")
        self.standby.start()
        self.primary.psql("SELECT pg_reload_conf()")
        wait_until(
            lambda: self.primary.psql("SELECT sync_state FROM pg_stat_replication") == "sync",
            timeout=30,
            interval=0.1,
            what="standby streaming synchronously",
        )
        self.primary.psql(f'CREATE DATABASE "{database}"')
        return self

    @property
    def hosts(self) -> str:
        return ",".join("127.0.0.1" for _ in self.servers)

    @property
    def ports(self) -> str:
        return ",".join(str(server.port) for server in self.servers)

    def fail_over(self) -> None:
        """The standby becomes the primary: promote it, then clear its synchronous standby
        names (it has no standby, and would make every commit wait forever)."""
        done = self.standby.pg_ctl("-w", "promote")
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl promote: {done.stdout}{done.stderr}")
        self.standby.psql("ALTER SYSTEM RESET synchronous_standby_names")
        self.standby.psql("SELECT pg_reload_conf()")

    def stop_all(self) -> None:
        for server in self.servers:
            server.stop()
        for server in self.servers:
            pid = server.postmaster_pid()
            if pid is not None and _alive(pid):
                server.kill()


def run_as_postgres(command: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    if os.geteuid() == 0:
        command = ["runuser", "-u", USER, "--", *command]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, check=False, cwd="/tmp"
    )


def chown_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, USER, USER)


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command may hold spaces and parentheses: the parent pid follows the last ")"
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie until its parent reaps it: not serving anything
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
