"""Test hosts with addresses of their own: network namespaces on a bridge, which a test can
partition from each other while the clients (in the root namespace) still reach every one.

Each host is a namespace ``lsfault-<name>`` with one end of a veth pair; the other end sits on
the bridge ``lsfault-br``, which lives in a namespace of its own (``lsfault-switch``): a bridge in
the root namespace would send the hosts' traffic through the root's FORWARD chain (br_netfilter),
which Docker sets to DROP. The root namespace gets one veth end, ``lsfault-gw``, holding the
gateway address the clients come from. Addresses come from :data:`SUBNET`, a private /24 nothing
else on the machine uses; only these addresses are ever targets of a rule. A partition is iptables
inside the host's own namespace (drop to and from its peers' addresses), so the root namespace's
tables are never touched.

Every name starts with :data:`PREFIX`: :func:`remove_stale` deletes whatever an interrupted run
left (its namespaces, the processes still inside them, its links) before a new one builds, and
:meth:`HostNetwork.remove` deletes everything after. So there is one network at a time on a
machine (the tests that build one hold it per module, and heavy runs take turns on a lock).
Needs root, ``ip`` and ``iptables``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

PREFIX = "lsfault-"
SWITCH = f"{PREFIX}switch"  # the namespace of the bridge
BRIDGE = f"{PREFIX}br"
GATEWAY_LINK = f"{PREFIX}gw"  # in the root namespace; its peer is a port of the bridge
SUBNET = ipaddress.IPv4Network("10.222.73.0/24")
GATEWAY = SUBNET[1]  # the bridge's address: where the clients in the root namespace come from
FIRST_HOST = 10


class NetnsError(RuntimeError):
    pass


def available() -> str | None:
    """``None`` when test hosts can be made here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: iproute2, iptables)"
    return None


def run(*command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    if check and done.returncode != 0:
        raise NetnsError(f"{' '.join(command)}: {done.stderr.strip() or done.stdout.strip()}")
    return done


def leftovers() -> list[str]:
    """Every namespace and link of ours that exists now."""
    namespaces = [line.split()[0] for line in run("ip", "netns", "list").stdout.splitlines()]
    links = [
        line.split(": ")[1].split("@")[0]
        for line in run("ip", "-o", "link", "show").stdout.splitlines()
    ]
    return sorted(name for name in [*namespaces, *links] if name.startswith(PREFIX))


def remove_stale() -> list[str]:
    """Delete what a run that did not finish left behind; return what was found."""
    found = leftovers()
    for name in found:
        if name in _namespaces():
            _kill_inside(name)
            run("ip", "netns", "delete", name, check=False)
    for name in leftovers():  # a veth goes with its peer's namespace; anything else is left
        run("ip", "link", "delete", name, check=False)
    still = leftovers()
    if still:
        raise NetnsError(f"could not remove stale test hosts: {still}")
    return found


def _namespaces() -> set[str]:
    return {line.split()[0] for line in run("ip", "netns", "list").stdout.splitlines()}


def _kill_inside(namespace: str) -> None:
    """Processes a dead run started inside its namespace: ours by the name, ended by their id."""
    for pid in run("ip", "netns", "pids", namespace, check=False).stdout.split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)


@dataclass
class Host:
    name: str
    address: str
    index: int

    @property
    def namespace(self) -> str:
        return f"{PREFIX}{self.name}"

    @property
    def switch_link(self) -> str:
        return f"{PREFIX}{self.index}s"  # interface names: 15 characters at most

    @property
    def inner_link(self) -> str:
        return f"{PREFIX}{self.index}n"

    def command(self, *command: str) -> list[str]:
        """``command`` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.namespace, *command]

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(*self.command(*command), check=check)


@dataclass
class HostNetwork:
    """Build with :meth:`create`, undo with :meth:`remove` (also after a failed create)."""

    names: Sequence[str]
    hosts: dict[str, Host] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.names) > 200:
            raise ValueError("a /24 holds 200 test hosts here")
        for index, name in enumerate(self.names):
            host = Host(name, str(SUBNET[FIRST_HOST + index]), index)
            if len(host.switch_link) > 15 or len(host.namespace) > 64:
                raise ValueError(f"host name too long: {name}")
            self.hosts[name] = host

    def create(self) -> HostNetwork:
        remove_stale()
        in_switch = ("ip", "netns", "exec", SWITCH)
        run("ip", "netns", "add", SWITCH)
        run(*in_switch, "ip", "link", "add", BRIDGE, "type", "bridge")
        run(*in_switch, "ip", "link", "set", BRIDGE, "up")
        run("ip", "link", "add", GATEWAY_LINK, "type", "veth", "peer", "name",
            f"{GATEWAY_LINK}p", "netns", SWITCH)  # fmt: skip
        run(*in_switch, "ip", "link", "set", f"{GATEWAY_LINK}p", "master", BRIDGE, "up")
        run("ip", "addr", "add", f"{GATEWAY}/{SUBNET.prefixlen}", "dev", GATEWAY_LINK)
        run("ip", "link", "set", GATEWAY_LINK, "up")
        for host in self.hosts.values():
            run("ip", "netns", "add", host.namespace)
            run(*in_switch, "ip", "link", "add", host.switch_link, "type", "veth", "peer", "name",
                host.inner_link, "netns", host.namespace)  # fmt: skip
            run(*in_switch, "ip", "link", "set", host.switch_link, "master", BRIDGE, "up")
            host.run("ip", "addr", "add", f"{host.address}/{SUBNET.prefixlen}", "dev",
                     host.inner_link)  # fmt: skip
            host.run("ip", "link", "set", host.inner_link, "up")
            host.run("ip", "link", "set", "lo", "up")
            host.run("ip", "route", "add", "default", "via", str(GATEWAY))
        return self

    def remove(self) -> None:
        remove_stale()

    def partition(self, name: str) -> None:
        """Cut host ``name`` off from every other test host, both ways; the gateway (the clients
        in the root namespace) still reaches it."""
        host = self.hosts[name]
        for peer in self.hosts.values():
            if peer is not host:
                host.run("iptables", "-A", "INPUT", "-s", peer.address, "-j", "DROP")
                host.run("iptables", "-A", "OUTPUT", "-d", peer.address, "-j", "DROP")

    def heal(self, name: str) -> None:
        self.hosts[name].run("iptables", "-F")
