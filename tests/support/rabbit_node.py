"""A RabbitMQ node of the test's own — own name, ports and data directory — so a chaos test can
restart a real broker without touching the machine's one.

It uses the installed ``rabbitmq-server``; the Debian package runs nodes as the ``rabbitmq`` user,
so the data directory is handed to that user. Requires root (as CI and the sessions here are).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from tests.support.ports import free_port
from tests.support.waiting import wait_until

SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
CTL = Path("/usr/lib/rabbitmq/bin/rabbitmqctl")


class PrivateRabbitNode:
    """``plugins``: e.g. ``("rabbitmq_management", "rabbitmq_prometheus")``; their HTTP ports are
    picked free (:attr:`management_port`, :attr:`prometheus_port`) and bound to 127.0.0.1."""

    def __init__(self, base_dir: Path, plugins: tuple[str, ...] = ()) -> None:
        self.name = f"lastseen_test_{uuid.uuid4().hex[:6]}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        self.base_dir = base_dir
        self.plugins = plugins
        self.management_port = free_port()
        self.prometheus_port = free_port()

    @staticmethod
    def available() -> str | None:
        """``None`` when a private node can run here, else why not."""
        if not SERVER.exists() or not CTL.exists():
            return f"{SERVER} is not installed"
        if os.geteuid() != 0:
            return "starting a private RabbitMQ node needs root (it runs as the rabbitmq user)"
        return None

    @property
    def amqp_uri(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def environment(self) -> dict[str, str]:
        """What the node's scripts read instead of the machine's settings."""
        config = "rabbitmq.conf" if self.plugins else "none"
        return {
            "HOME": "/var/lib/rabbitmq",
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": f"{self.base_dir}/mnesia",
            "RABBITMQ_LOG_BASE": f"{self.base_dir}/log",
            "RABBITMQ_ENABLED_PLUGINS_FILE": f"{self.base_dir}/enabled_plugins",
            "RABBITMQ_PID_FILE": f"{self.base_dir}/pid",
            "RABBITMQ_CONFIG_FILE": f"{self.base_dir}/{config}",
        }

    def _as_rabbitmq(self, command: str, timeout: float) -> subprocess.CompletedProcess[str]:
        env = " ".join(f"{key}={value}" for key, value in self.environment().items())
        return subprocess.run(
            [
                "su",
                "rabbitmq",
                "-s",
                "/bin/sh",
                "-c",
                f"cd /var/lib/rabbitmq && env {env} {command}",
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def prepare(self) -> None:
        """Files the node needs before it starts, owned by the user it runs as."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        (self.base_dir / "enabled_plugins").write_text(f"[{','.join(self.plugins)}].\n")
        if self.plugins:
            (self.base_dir / "rabbitmq.conf").write_text(
                f"management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {self.management_port}\n"
                f"prometheus.tcp.ip = 127.0.0.1\nprometheus.tcp.port = {self.prometheus_port}\n"
                # fresher queue figures in the management API (default: every 5 s)
                "collect_statistics_interval = 1000\n"
            )
        shutil.chown(self.base_dir, "rabbitmq", "rabbitmq")
        for path in self.base_dir.rglob("*"):
            shutil.chown(path, "rabbitmq", "rabbitmq")

    def start(self, timeout: float = 60.0) -> PrivateRabbitNode:
        self.prepare()
        started = self._as_rabbitmq(f"{SERVER} -detached", timeout=30)
        if started.returncode != 0:
            raise RuntimeError(f"rabbitmq-server failed: {started.stderr}")
        # -detached returns before the node registers; await_startup fails at once until it has.
        wait_until(
            lambda: (
                self._as_rabbitmq(
                    f"{CTL} -n {self.name} await_startup --timeout 10", timeout=20
                ).returncode
                == 0
            ),
            timeout=timeout,
            interval=0.5,
            what=f"private RabbitMQ node {self.name} started",
        )
        wait_until(self._port_open, timeout=timeout, what="private RabbitMQ port")
        return self

    def eval(self, expression: str) -> str:
        """Evaluate an Erlang expression on the node (``rabbitmqctl eval``); return its output."""
        result = self._as_rabbitmq(f"{CTL} -n {self.name} eval {shlex.quote(expression)}", 60)
        if result.returncode != 0:
            raise RuntimeError(f"rabbitmqctl eval failed: {result.stderr or result.stdout}")
        return result.stdout.strip()

    def stop(self) -> None:
        self._as_rabbitmq(f"{CTL} -n {self.name} stop", timeout=60)
        deadline = time.monotonic() + 30
        while self._port_open() and time.monotonic() < deadline:
            time.sleep(0.1)

    def restart(self) -> None:
        self.stop()
        self.start()

    def ctl(self, arguments: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``rabbitmqctl -n <this node> <arguments>``."""
        return self._as_rabbitmq(f"{CTL} -n {self.name} {arguments}", timeout=timeout)

    def _port_open(self) -> bool:
        import socket

        with socket.socket() as probe:
            probe.settimeout(0.5)
            return probe.connect_ex(("127.0.0.1", self.port)) == 0
