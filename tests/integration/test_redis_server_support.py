"""The tests' redis-servers do not outlive a test process killed without teardown (kill -9 of a
pytest or a benchmark): the kernel kills them too (``PR_SET_PDEATHSIG``, tests/support)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import PROJECT_ROOT
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

STARTER = """
import sys, time
from pathlib import Path
from tests.support.redis_server import RedisServer
server = RedisServer(Path(sys.argv[1])).start()
print(server.pid, flush=True)
time.sleep(120)
"""


def gone(pid: int) -> bool:
    """Not running: no such process, or a zombie waiting for whoever reaps orphans."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def test_a_redis_server_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    starter = subprocess.Popen(
        [sys.executable, "-c", STARTER, str(tmp_path / "redis")],
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert starter.stdout is not None
    redis_pid = int(starter.stdout.readline())
    try:
        assert not gone(redis_pid)
        starter.send_signal(signal.SIGKILL)  # no teardown runs
        starter.wait(10)
        wait_until(lambda: gone(redis_pid), timeout=10, what="redis-server gone")
    finally:
        if not gone(redis_pid):
            os.kill(redis_pid, signal.SIGKILL)
        starter.stdout.close()
