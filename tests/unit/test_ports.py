"""Who holds a port: readiness checks ask /proc, not only whether something answers."""

from __future__ import annotations

import os
import socket

import pytest

from tests.support.ports import free_port, listens_on

pytestmark = pytest.mark.unit


def test_a_listening_socket_is_found_in_its_own_process_only() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert listens_on(os.getpid(), port)
        assert not listens_on(1, port)  # init does not hold it


def test_a_bound_but_not_listening_or_free_port_is_nobodys() -> None:
    port = free_port()
    assert not listens_on(os.getpid(), port)
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        assert not listens_on(os.getpid(), bound.getsockname()[1])
