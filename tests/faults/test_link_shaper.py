"""The shaping proxy on real sockets: the delays, losses and cap it promises, measured on an echo
server behind it. Bounds are one-sided where the physics is (nothing arrives sooner than the
latency allows, or faster than the cap) and generous where the machine's load is."""

from __future__ import annotations

import os
import socket
import socketserver
import statistics
import threading
import time
from collections.abc import Iterator

import pytest

from tests.support.link_shaper import Link
from tests.support.proxy import TcpProxy

pytestmark = pytest.mark.faults


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture(scope="module")
def echo_port() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(echo_port: int) -> Iterator[TcpProxy]:
    started = TcpProxy("127.0.0.1", echo_port).start()
    yield started
    started.stop()


def connect(proxy: TcpProxy) -> socket.socket:
    client = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client


def receive(client: socket.socket, size: int) -> bytes:
    received = bytearray()
    while len(received) < size:
        chunk = client.recv(65536)
        assert chunk, "the proxy closed the connection"
        received += chunk
    return bytes(received)


def round_trips(client: socket.socket, count: int) -> list[float]:
    """Seconds for each of ``count`` 32-byte pings to come back, one after another."""
    times = []
    for _ in range(count):
        ping = os.urandom(32)
        began = time.perf_counter()
        client.sendall(ping)
        assert receive(client, len(ping)) == ping
        times.append(time.perf_counter() - began)
    return times


def test_latency_and_jitter_are_added_each_way(proxy: TcpProxy) -> None:
    proxy.shape(Link(latency=0.05, jitter=0.01), seed=1)
    with connect(proxy) as client:
        times = round_trips(client, 20)
    # Each way at least 40 ms: no round trip under 80 ms, whatever the load.
    assert min(times) >= 0.08, times
    assert statistics.median(times) < 0.25, times
    # ±10 ms each way (a standard deviation of 8 ms on the sum): round trips spread, unlike a
    # fixed delay.
    assert statistics.stdev(times) > 0.002, times
    assert proxy.retransmissions == 0


def test_lost_segments_come_late_by_a_retransmission_timeout(proxy: TcpProxy) -> None:
    proxy.shape(Link(latency=0.005, loss=0.2), seed=2)
    with connect(proxy) as client:
        times = round_trips(client, 40)
    late = [t for t in times if t >= 0.2]
    # 1 - 0.8² = 36 % of the round trips cross a loss: 14.4 of 40 on average (seeded draws).
    assert 3 <= len(late) <= 32, times
    assert proxy.retransmissions >= len(late)
    assert min(times) >= 0.01


def test_the_bandwidth_cap_holds(proxy: TcpProxy) -> None:
    rate = 256 * 1024.0
    payload = os.urandom(192 * 1024)
    proxy.shape(Link(bandwidth=rate), seed=3)
    with connect(proxy) as client:
        began = time.perf_counter()
        sender = threading.Thread(target=client.sendall, args=(payload,))
        sender.start()
        echoed = receive(client, len(payload))
        elapsed = time.perf_counter() - began
        sender.join()
    assert echoed == payload
    # Both ways pass the cap; pipelined, the whole cannot take less than one way's worth.
    assert elapsed >= 0.9 * len(payload) / rate, elapsed
    assert elapsed < 10 * len(payload) / rate, elapsed


def test_a_shaped_stream_arrives_whole_and_in_order(proxy: TcpProxy) -> None:
    proxy.shape(Link(latency=0.01, jitter=0.01, loss=0.05), seed=4)
    payload = os.urandom(128 * 1024)
    with connect(proxy) as client:
        sender = threading.Thread(target=client.sendall, args=(payload,))
        sender.start()
        assert receive(client, len(payload)) == payload
        sender.join()


def test_unshaping_restores_full_speed_on_open_connections(proxy: TcpProxy) -> None:
    proxy.shape(Link(latency=0.2), seed=5)
    with connect(proxy) as client:
        assert min(round_trips(client, 2)) >= 0.4
        proxy.shape(None)
        assert min(round_trips(client, 5)) < 0.2
