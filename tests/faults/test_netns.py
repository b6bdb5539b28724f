"""Test hosts in network namespaces: a partitioned host loses its peers and keeps its clients;
healed, it has both again; a run killed half way leaves nothing the next one trips on."""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.support import netns
from tests.support.netns import Host, HostNetwork
from tests.support.waiting import wait_until

pytestmark = pytest.mark.faults

PORT = 7000
LISTEN = """
import socket, sys
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
while True:
    server.accept()[0].close()
"""
PROBE = """
import socket, sys
socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
"""


@pytest.fixture(scope="module")
def hosts() -> Iterator[HostNetwork]:
    why = netns.available()
    if why:
        pytest.fail(f"the faults tier cannot run here: {why}")
    net = HostNetwork(["a", "b", "c"])
    listeners: list[subprocess.Popen[bytes]] = []
    try:
        net.create()
        for host in net.hosts.values():
            command = host.command(sys.executable, "-c", LISTEN, host.address, str(PORT))
            listeners.append(subprocess.Popen(command))
        for host in net.hosts.values():
            wait_until(lambda h=host: reaches_from_root(h), timeout=10, what=f"{host.name} up")
        yield net
    finally:
        for listener in listeners:
            listener.kill()
            listener.wait(timeout=10)
        net.remove()


def reaches_from_root(host: Host, timeout: float = 1.0) -> bool:
    try:
        socket.create_connection((host.address, PORT), timeout=timeout).close()
    except OSError:
        return False
    return True


def reaches(source: Host, target: Host, timeout: float = 1.0) -> bool:
    probe = [sys.executable, "-c", PROBE, target.address, str(PORT), str(timeout)]
    return source.run(*probe, check=False).returncode == 0


def test_a_partitioned_host_keeps_its_clients_and_loses_its_peers(hosts: HostNetwork) -> None:
    a, b, c = (hosts.hosts[name] for name in "abc")
    assert reaches(b, a) and reaches(a, c) and reaches_from_root(a)
    hosts.partition("a")
    try:
        assert reaches_from_root(a), "the clients lost the partitioned host"
        assert not reaches(b, a) and not reaches(a, b) and not reaches(a, c)
        assert reaches(b, c), "the partition cut hosts it should have left alone"
    finally:
        hosts.heal("a")
    assert reaches(b, a) and reaches(a, c)


def test_a_partition_targets_only_the_test_hosts_of_the_private_subnet(hosts: HostNetwork) -> None:
    a = hosts.hosts["a"]
    peers = {host.address for host in hosts.hosts.values() if host is not a}
    assert all(ipaddress.ip_address(address) in netns.SUBNET for address in peers)
    hosts.partition("a")
    try:
        rules = [line.split() for line in a.run("iptables-save").stdout.splitlines()]
    finally:
        hosts.heal("a")
    targets = {words[i + 1] for words in rules for i, w in enumerate(words) if w in ("-s", "-d")}
    assert targets == {f"{address}/32" for address in peers}
    assert "-A" not in a.run("iptables-save").stdout, "heal left rules behind"
