"""Redis servers of the tests' own: Debian's ``redis-server`` on a free port, in a folder of its
own, stopped and removed afterwards, and killed by the kernel if the process that started it dies
first (no teardown runs then). The machine's Redis (6379) is never touched."""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

import redis

from tests.support.ports import free_port
from tests.support.processes import die_with_parent
from tests.support.waiting import wait_until

REDIS_SERVER = "redis-server"


class RedisServer:
    """One ``redis-server`` process; :meth:`kill` and :meth:`start` again keep its port and its
    data folder (an AOF restart), :meth:`remove` deletes them."""

    def __init__(
        self, folder: Path, *, port: int | None = None, config: dict[str, str] | None = None
    ) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.config = {
            "bind": "127.0.0.1",
            "port": str(self.port),
            "dir": str(folder),
            "daemonize": "no",
            "save": '""',
            "appendonly": "yes",
            "appendfsync": "everysec",
            "protected-mode": "no",
            "logfile": str(folder / "redis.log"),
            **(config or {}),
        }
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        password = self.config.get("requirepass")
        return redis.Redis(host="127.0.0.1", port=self.port, password=password, socket_timeout=5)

    def start(self, timeout: float = 10.0) -> RedisServer:
        if shutil.which(REDIS_SERVER) is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.folder.mkdir(parents=True, exist_ok=True)
        conf = self.folder / "redis.conf"
        conf.write_text("".join(f"{key} {value}\n" for key, value in self.config.items()))
        # Start it from a thread that outlives it (see die_with_parent): the test's or the
        # benchmark's main thread, not a worker thread that ends first.
        self._process = subprocess.Popen(
            [REDIS_SERVER, str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        wait_until(self._answers, timeout=timeout, what=f"redis-server on {self.port}")
        return self

    def _answers(self) -> bool:
        if self._process is not None and self._process.poll() is not None:
            log = (self.folder / "redis.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"redis-server exited {self._process.returncode}:\n{log}")
        client = self.client()
        try:
            return bool(client.ping())
        except (redis.ConnectionError, redis.ResponseError):
            # ResponseError: LOADING (the AOF is being read) or NOAUTH (a password is set).
            return False
        finally:
            client.close()

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("not started")
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def kill(self) -> None:
        """SIGKILL: what the AOF has not fsynced is lost."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(10)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
