"""The cluster tier's 3-node RabbitMQ cluster, each node on a test host of its own
(:mod:`tests.support.netns`), so one node can be cut off from its peers while clients still
reach it.

Each node runs inside its host's namespace on the standard ports (every namespace has its own),
with a long node name on the host's address and its own epmd there (started by the node, ended
with the namespace). ``net_ticktime`` is 4 s (the default, 60 s, would let a partition go unseen
for a minute) and ``cluster_partition_handling`` is ``pause_minority``: the node that loses its
peers pauses, closing its client connections, so clients move to the majority instead of waiting
on a node that cannot confirm. Clients come from the gateway, not from loopback, so ``guest`` is
allowed from there (``loopback_users = none``): these nodes listen on the test subnet only.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

from tests.support.netns import Host, HostNetwork
from tests.support.rabbit_cluster import ClusterNode, RabbitCluster

AMQP_PORT = 5672
DIST_PORT = 25672
NET_TICKTIME_S = 4
CONFIG = """\
cluster_partition_handling = pause_minority
loopback_users = none
"""


class NamespacedNode(ClusterNode):
    def __init__(
        self, base_dir: Path, name: str, home: Path, conf_env_file: Path, host: Host
    ) -> None:
        super().__init__(base_dir, name, home, conf_env_file)
        self.host = host
        self.port = AMQP_PORT
        self.dist_port = DIST_PORT

    @property
    def amqp_uri(self) -> str:
        return f"amqp://guest:guest@{self.host.address}:{self.port}/"

    def environment(self) -> dict[str, str]:
        return {
            **super().environment(),
            "RABBITMQ_NODE_IP_ADDRESS": self.host.address,
            "RABBITMQ_USE_LONGNAME": "true",
            "RABBITMQ_CONFIG_FILE": f"{self.base_dir}/rabbitmq.conf",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": f"'-kernel net_ticktime {NET_TICKTIME_S}'",
        }

    def prepare(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        (self.base_dir / "rabbitmq.conf").write_text(CONFIG)
        super().prepare()

    def _as_rabbitmq(self, command: str, timeout: float) -> subprocess.CompletedProcess[str]:
        env = " ".join(f"{key}={value}" for key, value in self.environment().items())
        script = f"cd /var/lib/rabbitmq && env {env} {command}"
        return subprocess.run(
            self.host.command("su", "rabbitmq", "-s", "/bin/sh", "-c", script),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def _port_open(self) -> bool:
        import socket

        with socket.socket() as probe:
            probe.settimeout(0.5)
            return probe.connect_ex((self.host.address, self.port)) == 0


class NamespacedRabbitCluster(RabbitCluster):
    """A :class:`RabbitCluster` whose node ``n`` runs on ``network.hosts[names[n]]``."""

    def __init__(self, base_dir: Path, network: HostNetwork, names: list[str]) -> None:
        tag = uuid.uuid4().hex[:6]
        self.base_dir = base_dir
        self.home = base_dir / "home"
        self.conf_env_file = base_dir / "rabbitmq-env.conf"
        self.nodes = [
            NamespacedNode(
                base_dir / name,
                f"lsfault_{tag}_{n}@{network.hosts[name].address}",
                self.home,
                self.conf_env_file,
                network.hosts[name],
            )
            for n, name in enumerate(names, start=1)
        ]

    def stop_all(self) -> None:
        """kill -9 every node's VM: their data is thrown away with the run, and a graceful stop
        costs ~9 s a node here (their epmd goes with the namespaces)."""
        for node in self.nodes:
            if node.os_pid is not None:
                node.kill()

    def node_of(self, name: str) -> NamespacedNode:
        return next(n for n in self.nodes if isinstance(n, NamespacedNode) and n.host.name == name)

    def connections(self) -> list[tuple[str, ClusterNode]]:
        """Every client connection: its ``connection_name`` and the node (by address) it is on."""
        for via in self.nodes:
            if not via.running():
                continue
            found = via.ctl(
                "list_connections client_properties host --formatter json --timeout 10",
                timeout=30,
            )
            if found.returncode != 0:
                continue
            connections: list[tuple[str, ClusterNode]] = []
            by_address = {n.host.address: n for n in self.nodes if isinstance(n, NamespacedNode)}
            for entry in json.loads(found.stdout):
                properties = {item[0]: item[2] for item in entry["client_properties"]}
                name = str(properties.get("connection_name", ""))
                node = by_address.get(_address(entry["host"]))
                if node is None:
                    raise LookupError(f"a connection on no node of this cluster: {entry}")
                connections.append((name, node))
            return connections
        return []


def _address(host: object) -> str:
    """The server address of a connection as rabbitmqctl's JSON gives it: a string (perhaps an
    IPv4-mapped IPv6 one) or the Erlang tuple as a list of numbers."""
    if isinstance(host, list):
        return ".".join(str(part) for part in host)
    return str(host).removeprefix("::ffff:")
