"""The HA setup's HAProxy (ha/haproxy.cfg, as docker-compose.ha.yml mounts it) against slow
clients: a head or body trickled past ``timeout http-request`` gets 408, and one address holds at
most 1,000 connections. Debian's haproxy, the version the cluster tier runs; only the addresses
it binds are changed (loopback, free ports); the producers stay unresolved, as nothing here is
forwarded to them."""

from __future__ import annotations

import asyncio
import csv
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.haproxy import BINARY, HaProxy
from tests.support.ports import free_port
from tests.support.processes import PROJECT_ROOT
from tests.support.producer import accepts_connections
from tests.support.waiting import wait_until

from .conftest import Flood

pytestmark = pytest.mark.slowclients

CONFIG = PROJECT_ROOT / "ha" / "haproxy.cfg"
PER_SOURCE = 1000
REQUEST_TIMEOUT = 5.0


def directive(name: str) -> str:
    match = re.search(rf"^\s*{re.escape(name)}\s+(.+)$", CONFIG.read_text(), re.M)
    assert match, name
    return match.group(1).strip()


def test_the_config_sets_the_slow_client_limits_this_tier_checks() -> None:
    assert directive("timeout http-request") == f"{REQUEST_TIMEOUT:g}s"
    assert "option http-buffer-request" in CONFIG.read_text()  # the body is covered too
    assert int(directive("maxconn")) > PER_SOURCE
    assert directive("tcp-request connection reject if") == f"{{ sc0_conn_cur gt {PER_SOURCE} }}"


@dataclass(frozen=True)
class Balancer:
    port: int
    stats_port: int

    def current_connections(self) -> int:
        """The callbacks frontend's current sessions (``scur``), from HAProxy's own stats."""
        url = f"http://127.0.0.1:{self.stats_port}/stats;csv"
        rows = csv.reader(httpx.get(url, timeout=5).text.lstrip("# ").splitlines())
        header = next(rows)
        for row in rows:
            fields = dict(zip(header, row, strict=False))
            if fields["pxname"] == "callbacks" and fields["svname"] == "FRONTEND":
                return int(fields["scur"])
        raise AssertionError("no callbacks frontend in HAProxy's stats")


@pytest.fixture
def balancer(tmp_path: Path) -> Iterator[Balancer]:
    HaProxy.ensure_installed()
    port, stats = free_port(), free_port()
    text = CONFIG.read_text()
    text = text.replace("bind :9090", f"bind 127.0.0.1:{port}")
    text = text.replace("bind :8404", f"bind 127.0.0.1:{stats}")
    config = tmp_path / "haproxy.cfg"
    config.write_text(text)
    check = subprocess.run(
        [BINARY, "-c", "-f", str(config)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    log = tmp_path / "haproxy.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [BINARY, "-db", "-f", str(config)], stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        wait_until(lambda: accepts_connections(port), timeout=10, what="haproxy listening")
        yield Balancer(port, stats)
    finally:
        process.terminate()
        process.wait(timeout=10)


async def answer_and_time(port: int, first: bytes, trickle: bytes) -> tuple[bytes, float]:
    """Send ``first``, then ``trickle`` a byte a second; what HAProxy answers, and when."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(first)
    try:
        for index in range(len(trickle)):
            try:
                answer = await asyncio.wait_for(reader.read(4096), timeout=1.0)
            except TimeoutError:
                writer.write(trickle[index : index + 1])
                continue
            return answer, time.monotonic() - started
        raise AssertionError("HAProxy let the whole trickle through")
    finally:
        writer.close()


async def test_heads_and_bodies_slower_than_the_request_timeout_get_408(
    balancer: Balancer,
) -> None:
    head = b"POST /callback HTTP/1.1\r\nhost: balancer\r\ncontent-type: application/json\r\n"
    body_head = head + b"content-length: 1000\r\n\r\n"
    outcomes = await asyncio.gather(
        answer_and_time(balancer.port, b"", b"x" * 20),  # silent: never sent in time
        answer_and_time(balancer.port, b"", head * 2),
        answer_and_time(balancer.port, body_head, b"1" * 20),
    )
    for answer, took in outcomes:
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert REQUEST_TIMEOUT - 0.5 <= took <= REQUEST_TIMEOUT + 2.0, took


def refused_at_accept(port: int, source: str) -> bool:
    """Whether HAProxy closes a connection from ``source`` before any HTTP (else it answers)."""
    with socket.socket() as probe:
        probe.bind((source, 0))
        probe.settimeout(3.0)
        try:
            # The reset may come before connect() returns, or after: either way, refused.
            probe.connect(("127.0.0.1", port))
            probe.sendall(b"GET /health HTTP/1.1\r\nhost: balancer\r\n\r\n")
            return probe.recv(4096) == b""
        except (ConnectionResetError, BrokenPipeError):
            return True


def test_one_address_holds_at_most_its_share_of_connections(
    balancer: Balancer, flood: Callable[..., Flood]
) -> None:
    # Held until stopped: a flood that held its connections for 4 s from its own start left the
    # probe an empty window on a busy machine (connects retried after SYN drops; seen in a CI
    # rehearsal).
    attack = flood(balancer.port, pause=10.0, seconds=120.0, silent=PER_SOURCE + 200)
    wait_until(
        lambda: balancer.current_connections() >= PER_SOURCE,
        timeout=30,
        what="the flood holding its share",
    )
    assert refused_at_accept(balancer.port, "127.0.0.1")
    # HAProxy's own count: the flood's 1,200 connections never hold more than the share.
    assert balancer.current_connections() <= PER_SOURCE
    # Another address still gets in (no producer behind this HAProxy: 503).
    assert not refused_at_accept(balancer.port, "127.0.0.2")
    (report,) = attack.stop()
    assert report.get("opened", 0) + report.get("connect_failed", 0) >= PER_SOURCE + 200, report
