"""A Redis Cluster of the tests' own: six Debian ``redis-server`` processes on free ports (3
masters, 3 replicas), formed with ``redis-cli --cluster create --cluster-replicas 1``, with the
faults the cluster tier injects: kill -9 of a master, a manual ``CLUSTER FAILOVER``, and moving
slots to another master (``redis-cli --cluster reshard``) while clients write."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import redis

from tests.support.ports import free_port
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until

# Failover starts once a master has been unreachable for this long (ms): short, so a test waits
# seconds for a promotion, not the default 15 s.
NODE_TIMEOUT_MS = 1500


@dataclass
class Node:
    server: RedisServer
    id: str = ""

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def _client_port() -> int:
    """A free port Redis accepts for a cluster node (at most 55535, a limit of its own even when
    the bus port is set apart)."""
    return wait_until(
        lambda: next((p for p in [free_port()] if p <= 55535), None),
        timeout=5,
        interval=0,
        what="a free port below 55536",
    )


class RedisClusterNodes:
    def __init__(self, folder: Path, size: int = 6) -> None:
        self.nodes = [
            Node(
                RedisServer(
                    folder / f"node{n}",
                    port=_client_port(),
                    config={
                        "cluster-port": str(free_port()),
                        "cluster-enabled": "yes",
                        "cluster-config-file": "nodes.conf",
                        "cluster-node-timeout": str(NODE_TIMEOUT_MS),
                        # Keys of the shards that still have a master stay writable during a
                        # failover of another shard.
                        "cluster-require-full-coverage": "no",
                        "appendonly": "yes",
                    },
                )
            )
            for n in range(size)
        ]

    @property
    def seeds(self) -> str:
        """``REDIS_URL`` for the consumer: every node as a seed."""
        return "redis://" + ",".join(node.address for node in self.nodes)

    def start(self) -> RedisClusterNodes:
        for node in self.nodes:
            node.server.start()
        self.cli(
            "--cluster",
            "create",
            *(node.address for node in self.nodes),
            "--cluster-replicas",
            "1",
            "--cluster-yes",
        )
        for node in self.nodes:
            node.id = self._admin(node).execute_command("CLUSTER MYID").decode()
        self.wait_healthy()
        return self

    def remove(self) -> None:
        for node in self.nodes:
            node.server.remove()

    def cli(self, *args: str, timeout: float = 60.0) -> str:
        result = subprocess.run(
            ["redis-cli", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"redis-cli {' '.join(args)}: {result.stdout}{result.stderr}")
        return result.stdout

    def _admin(self, node: Node) -> redis.Redis:
        return node.server.client()

    def role(self, node: Node) -> str:
        client = self._admin(node)
        try:
            return str(client.execute_command("ROLE")[0].decode())
        finally:
            client.close()

    def masters(self) -> list[Node]:
        return [n for n in self.nodes if n.server.running and self.role(n) == "master"]

    def replica_of(self, master: Node) -> Node:
        for node in self.nodes:
            if node is master or not node.server.running:
                continue
            client = self._admin(node)
            try:
                info = client.info("replication")
            finally:
                client.close()
            if info.get("role") == "slave" and int(info.get("master_port", 0)) == master.port:
                return node
        raise LookupError(f"no replica of {master.address}")

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Every running node sees the cluster as ok, with every slot served, and every replica is
        in sync with its master."""

        def healthy() -> bool:
            for node in self.nodes:
                if not node.server.running:
                    continue
                client = self._admin(node)
                try:
                    info = client.cluster("INFO")
                    replication = client.info("replication")
                except redis.RedisError:
                    return False
                finally:
                    client.close()
                if info.get("cluster_state") != "ok" or int(info["cluster_slots_ok"]) != 16384:
                    return False
                # A replica that never finished its first sync refuses to fail over
                # ("disconnected from master for longer than allowed").
                if replication.get("role") == "slave" and replication["master_link_status"] != "up":
                    return False
            return True

        wait_until(healthy, timeout=timeout, interval=0.1, what="cluster state ok")

    def kill_master(self, master: Node, timeout: float = 30.0) -> Node:
        """kill -9 ``master``; return its replica once that one is a master."""
        replica = self.replica_of(master)
        master.server.kill()
        wait_until(
            lambda: self.role(replica) == "master",
            timeout=timeout,
            interval=0.1,
            what=f"{replica.address} promoted",
        )
        self.wait_healthy(timeout)
        return replica

    def manual_failover(self, master: Node, timeout: float = 30.0) -> Node:
        """``CLUSTER FAILOVER`` on ``master``'s replica (no data lost); return the replica."""
        replica = self.replica_of(master)
        client = self._admin(replica)
        try:
            client.execute_command("CLUSTER FAILOVER")
        finally:
            client.close()
        wait_until(
            lambda: self.role(replica) == "master",
            timeout=timeout,
            interval=0.1,
            what=f"{replica.address} took over",
        )
        self.wait_healthy(timeout)
        return replica

    def reshard(self, source: Node, target: Node, slots: int) -> None:
        """Move ``slots`` slots, keys included, from ``source`` to ``target`` (MIGRATE: writers
        meet ASK and then MOVED)."""
        self.cli(
            "--cluster",
            "reshard",
            source.address,
            "--cluster-from",
            source.id,
            "--cluster-to",
            target.id,
            "--cluster-slots",
            str(slots),
            "--cluster-yes",
            "--cluster-pipeline",
            "100",
            timeout=120,
        )
        self.wait_healthy()
