"""A 3-node RabbitMQ cluster of the test's own, beside the machine's broker.

Each node is a :class:`PrivateRabbitNode` (Debian's ``/usr/lib/rabbitmq/bin/rabbitmq-server``
started directly, as the ``rabbitmq`` user) with its own name, ports and folders. The three
share an Erlang cookie of their own through ``HOME`` (so they cannot reach or be reached by the
machine's node), and ``RABBITMQ_CONF_ENV_FILE`` points at an empty file (the machine's one sets
the node name). They register with the machine's epmd, which must stay up. Measured here: the
three start in ~8 s, joining takes ~7 s, ~140 MB each.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.support.ports import free_port
from tests.support.rabbit_node import PrivateRabbitNode
from tests.support.waiting import wait_until


class ClusterNode(PrivateRabbitNode):
    def __init__(self, base_dir: Path, name: str, home: Path, conf_env_file: Path) -> None:
        super().__init__(base_dir)
        self.name = name
        self.home = home
        self.conf_env_file = conf_env_file
        self.os_pid: int | None = None

    def environment(self) -> dict[str, str]:
        return {
            **super().environment(),
            "HOME": str(self.home),
            "RABBITMQ_CONF_ENV_FILE": str(self.conf_env_file),
        }

    def start(self, timeout: float = 60.0) -> ClusterNode:
        super().start(timeout)
        found = self.ctl("eval 'os:getpid().'", timeout=20)
        self.os_pid = int(found.stdout.strip().strip('"'))
        return self

    def kill(self) -> None:
        """kill -9 the node's Erlang VM, as a crash would."""
        assert self.os_pid is not None, f"{self.name} was not started here"
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.os_pid, signal.SIGKILL)
        self.os_pid = None
        wait_until(lambda: not self._port_open(), timeout=10, what=f"{self.name} gone")

    def running(self) -> bool:
        return self._port_open()


class RabbitCluster:
    def __init__(self, base_dir: Path, size: int = 3) -> None:
        tag = uuid.uuid4().hex[:6]
        self.base_dir = base_dir
        self.home = base_dir / "home"
        self.conf_env_file = base_dir / "rabbitmq-env.conf"
        self.nodes = [
            ClusterNode(
                base_dir / f"node{n}",
                f"lastseen_cluster_{tag}_{n}@localhost",
                self.home,
                self.conf_env_file,
            )
            for n in range(1, size + 1)
        ]
        self._distinct_ports()

    def _distinct_ports(self) -> None:
        """free_port() closes its probe: two picks can return the same port. Six listeners must
        not share one."""
        taken: set[int] = set()
        for node in self.nodes:
            while node.port in taken or node.dist_port in taken or node.port == node.dist_port:
                node.port, node.dist_port = free_port(), free_port()
            taken |= {node.port, node.dist_port}

    @property
    def amqp_uri(self) -> str:
        """Every node, comma-separated, as ``AMQP_URI`` takes them."""
        return ",".join(node.amqp_uri for node in self.nodes)

    def start(self) -> RabbitCluster:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(exist_ok=True)
        cookie = self.home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16).upper())
        cookie.chmod(0o400)
        self.conf_env_file.write_text("")
        for path in (self.base_dir, self.home, cookie, self.conf_env_file):
            shutil.chown(path, "rabbitmq", "rabbitmq")
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(self._start_fresh, self.nodes))
        first = self.nodes[0]
        for node in self.nodes[1:]:
            for step in ("stop_app", f"join_cluster {first.name}", "start_app"):
                done = node.ctl(step)
                if done.returncode != 0:
                    raise RuntimeError(f"{node.name} {step}: {done.stdout}{done.stderr}")
        self.wait_formed()
        return self

    def _start_fresh(self, node: ClusterNode) -> None:
        """Start a node that has never run; once more on other ports if its ports were taken in
        the meantime (a free port is only free when picked)."""
        try:
            node.start()
        except (RuntimeError, AssertionError) as error:
            node.ctl("stop", timeout=30)
            shutil.rmtree(node.base_dir, ignore_errors=True)
            others = {p for n in self.nodes if n is not node for p in (n.port, n.dist_port)}
            node.port, node.dist_port = free_port(), free_port()
            while {node.port, node.dist_port} & others or node.port == node.dist_port:
                node.port, node.dist_port = free_port(), free_port()
            try:
                node.start()
            except (RuntimeError, AssertionError):
                raise error from None

    def running_nodes(self, via: ClusterNode | None = None) -> set[str]:
        for node in [via] if via else self.nodes:
            if node is None or not node.running():
                continue
            status = node.ctl("cluster_status --formatter json", timeout=20)
            if status.returncode == 0:
                return set(json.loads(status.stdout)["running_nodes"])
        return set()

    def wait_formed(self, timeout: float = 60.0) -> None:
        names = {node.name for node in self.nodes}
        wait_until(
            lambda: self.running_nodes() == names,
            timeout=timeout,
            interval=0.5,
            what="every cluster node running",
        )

    def restart(self, node: ClusterNode) -> None:
        """Start a killed or stopped node again (it rejoins with its data) and wait for it."""
        node.start()
        self.wait_formed()

    def stop_all(self) -> None:
        for node in self.nodes:
            if node.running():
                node.stop()
        # a node killed or stopped may leave its VM behind only if the stop failed: kill it
        for node in self.nodes:
            if node.os_pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(node.os_pid, signal.SIGKILL)

    def node_on_port(self, port: int) -> ClusterNode:
        return next(node for node in self.nodes if node.port == port)

    def _any_running(self) -> ClusterNode:
        return next(node for node in self.nodes if node.running())

    def connections(self) -> list[tuple[str, ClusterNode]]:
        """Every client connection in the cluster: its ``connection_name`` and its node."""
        found = self._any_running().ctl(
            "list_connections client_properties port --formatter json", timeout=30
        )
        if found.returncode != 0:
            return []
        connections = []
        for entry in json.loads(found.stdout):
            properties = {item[0]: item[2] for item in entry["client_properties"]}
            name = str(properties.get("connection_name", ""))
            connections.append((name, self.node_on_port(int(entry["port"]))))
        return connections

    def nodes_of(self, connection_name: str) -> list[ClusterNode]:
        """The nodes the connections of that name are on (one per client process)."""
        return [node for name, node in self.connections() if name == connection_name]

    def queues(self) -> list[dict[str, Any]]:
        """Quorum queues with their ``leader`` and ``members``."""
        found = self._any_running().ctl(
            "list_queues name leader members online --formatter json", timeout=30
        )
        if found.returncode != 0:
            return []
        return list(json.loads(found.stdout))

    def leader_of(self, queue: str) -> ClusterNode:
        for entry in self.queues():
            if entry["name"] == queue:
                return next(node for node in self.nodes if node.name == entry["leader"])
        raise LookupError(f"no queue {queue}")


def wait_seconds(condition: Any, timeout: float, what: str) -> float:
    """How long until ``condition`` held (polled every 0.1 s)."""
    started = time.monotonic()
    wait_until(condition, timeout=timeout, interval=0.1, what=what)
    return time.monotonic() - started
