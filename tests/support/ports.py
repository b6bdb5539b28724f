"""Ports for the test's own servers: picked free, never fixed, so parallel runs don't collide."""

from __future__ import annotations

import os
import socket
from pathlib import Path

LISTEN = "0A"  # the TCP state in /proc/net/tcp


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def listens_on(pid: int, port: int) -> bool:
    """Does process ``pid`` hold the listening TCP socket on ``port``?

    A port picked free can be taken by someone else before the service binds it; the service then
    fails to listen while the other server answers its health check (seen: a chaos suite's tester
    port taken by another test's producer, whose ``/health`` answered and whose ``/control`` was a
    404). Readiness asks who holds the port, from ``/proc``, not only whether something answers.
    """
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == LISTEN and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{inode}]")
    if not inodes:
        return False
    try:
        descriptors = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for descriptor in descriptors:
        try:
            if os.readlink(descriptor) in inodes:
                return True
        except OSError:
            continue
    return False
