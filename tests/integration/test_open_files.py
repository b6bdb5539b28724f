"""The consumer's and the producer's open-file limit as their processes see it: raised at start
when the hard limit allows, exit 2 with one line when it does not. ``prlimit`` sets the limits the
child starts with."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from common.open_files import HOW_TO_RAISE, OTHER_DESCRIPTORS, connection_budget
from tests.support.ports import free_port
from tests.support.processes import ServiceProcess
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

# Nothing to connect to: the limit is decided before the consumer connects.
UNREACHABLE = {
    "AMQP_URI": "amqp://guest:guest@127.0.0.1:1/",
    "QUEUE_NAME": "q",
    "POSTGRES_HOST": "127.0.0.1",
    "POSTGRES_PORT": "1",
    "POSTGRES_DB": "postgres",
    "POSTGRES_USER": "postgres",
    "TESTER_ENDPOINT": "http://127.0.0.1:1",
}
POOL_SIZE = 10  # POSTGRES_POOL_SIZE's default


def consumer_command(soft: int, hard: int) -> list[str]:
    return ["prlimit", f"--nofile={soft}:{hard}", sys.executable, "-m", "consumer"]


def test_max_consumers_above_the_hard_limit_exits_2_with_one_line(tmp_path: Path) -> None:
    env = ServiceProcess("consumer", {**UNREACHABLE, "MAX_CONSUMERS": "30000"}, tmp_path).env
    result = subprocess.run(
        consumer_command(1024, 4096),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    needed = 30000 + POOL_SIZE + OTHER_DESCRIPTORS
    assert result.stderr.splitlines() == [
        f"consumer: configuration error: MAX_CONSUMERS=30000 needs {needed} open files (30000 "
        f"status lookups + {POOL_SIZE} database connections + {OTHER_DESCRIPTORS} others), but "
        f"the hard limit is 4096: lower MAX_CONSUMERS or {HOW_TO_RAISE}"
    ]
    assert "dependency_unavailable" not in result.stdout, "refused before connecting"


def test_the_soft_limit_is_raised_to_what_max_consumers_needs(tmp_path: Path) -> None:
    env = ServiceProcess(
        "consumer", {**UNREACHABLE, "MAX_CONSUMERS": "2000", "STARTUP_TIMEOUT": "60s"}, tmp_path
    ).env
    log = tmp_path / "consumer.log"
    needed = 2000 + POOL_SIZE + OTHER_DESCRIPTORS
    with log.open("wb") as output:
        process = subprocess.Popen(
            consumer_command(256, 8192), cwd=tmp_path, env=env, stdout=output, stderr=output
        )
    try:
        # prlimit execs the consumer: the same pid. It keeps trying to connect meanwhile.
        limits = Path(f"/proc/{process.pid}/limits")

        def open_files_limit() -> list[str] | None:
            assert process.poll() is None, log.read_text()
            [line] = [row for row in limits.read_text().splitlines() if "open files" in row]
            values = line.split()[3:5]
            return values if values == [str(needed), "8192"] else None

        wait_until(open_files_limit, timeout=20, what=f"soft limit {needed}, hard 8192")
        wait_until(
            lambda: '"soft_before":256' in log.read_text(), timeout=20, what="the raise logged"
        )
    finally:
        # Still connecting to nothing, and the connect loop runs to STARTUP_TIMEOUT: no clean
        # stop to wait for (shutdown has tests of its own).
        process.kill()
        process.wait(timeout=10)


def test_the_producer_raises_its_soft_limit_to_what_its_connection_cap_needs(
    tmp_path: Path,
) -> None:
    # Docker's default (soft 1024, a far higher hard limit) held the cap at ~700 connections
    # when it was budgeted from the soft limit: now the cap comes from the hard limit, and the
    # soft one is raised to cover it, before the producer connects to anything.
    hard = 8192
    budget = connection_budget(hard)
    needed = budget.default + OTHER_DESCRIPTORS + budget.backlog
    env = ServiceProcess(
        "producer",
        {
            "AMQP_URI": "amqp://guest:guest@127.0.0.1:1/",
            "QUEUE_NAME": "q",
            "PRODUCER_PORT": str(free_port()),
            "SPOOL_PATH": str(tmp_path / "spool.sqlite3"),
        },
        tmp_path,
    ).env
    log = tmp_path / "producer.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            ["prlimit", f"--nofile=1024:{hard}", sys.executable, "-m", "producer"],
            cwd=tmp_path,
            env=env,
            stdout=output,
            stderr=output,
        )
    try:
        limits = Path(f"/proc/{process.pid}/limits")

        def open_files_limit() -> list[str] | None:
            assert process.poll() is None, log.read_text()
            [line] = [row for row in limits.read_text().splitlines() if "open files" in row]
            values = line.split()[3:5]
            return values if values == [str(needed), str(hard)] else None

        wait_until(open_files_limit, timeout=20, what=f"soft limit {needed}, hard {hard}")
        wait_until(
            lambda: f'"max_connections":{budget.default}' in log.read_text(),
            timeout=20,
            what="the producer serving with the cap the hard limit allows",
        )
    finally:
        process.kill()
        process.wait(timeout=10)
