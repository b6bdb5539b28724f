"""Uvicorn's HTTP protocol with deadlines for a request's head and body and a cap on connections.

Uvicorn serves a connection for as long as its request head trickles in and has no cap below
the open-file limit: one client holding thousands of slow connections took every descriptor,
and the well-behaved callbacks were the ones refused (issue 23). Uvicorn accepts a protocol class
as ``http=``; this one is its httptools protocol, told about each connection's progress through
the protocol's public callbacks (the parser's ``on_*`` events, ``connection_made``/``lost``,
``on_response_complete``, uvicorn's own hook) and closing the connections that
:class:`ConnectionTable` names. Those hooks are uvicorn's internals, not its public API: uvicorn is
pinned to the tested minor (pyproject.toml) and checked at start (``common.versions.GUARDED_HTTP``).
"""

from __future__ import annotations

import asyncio
from time import monotonic

import structlog
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from producer.connection_table import ConnectionTable, Stage

log = structlog.get_logger("producer")

# What Go's net/http and HAProxy answer a client too slow with its request head.
REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
# How often the deadlines are checked, at most: a deadline is kept within this much.
LONGEST_SWEEP = 1.0
# While slow clients are being closed, one log line this often, not one per connection: a flood
# must not become a flood of log lines.
REPORT_EVERY = 10.0


class ConnectionGuard:
    """One server's connection table, the protocol class that keeps it, and its deadline sweep."""

    def __init__(self, max_connections: int, header_timeout: float, body_timeout: float) -> None:
        self.table: ConnectionTable[_GuardedProtocol] = ConnectionTable(
            max_connections, header_timeout, body_timeout
        )
        self.sweep_interval = min(LONGEST_SWEEP, header_timeout / 4, body_timeout / 4)
        self.closed = {"evicted": 0, "head_timeout": 0, "body_timeout": 0}
        guard = self

        class Protocol(_GuardedProtocol):
            connection_guard = guard

        self.protocol_class: type[HttpToolsProtocol] = Protocol

    async def enforce_deadlines(self) -> None:
        """Close connections past their head or body deadline; runs until cancelled."""
        reported = dict(self.closed)
        next_report = monotonic()
        while True:
            await asyncio.sleep(self.sweep_interval)
            for protocol, stage in self.table.expired(monotonic()):
                self.closed["head_timeout" if stage is Stage.HEAD else "body_timeout"] += 1
                protocol.close_slow(answer_408=stage is Stage.HEAD)
            if self.closed != reported and monotonic() >= next_report:
                log.warning("slow_clients_closed", open=len(self.table), **self.closed)
                reported, next_report = dict(self.closed), monotonic() + REPORT_EVERY

    def evict(self, protocols: list[_GuardedProtocol]) -> None:
        self.closed["evicted"] += len(protocols)
        for protocol in protocols:
            protocol.close_slow(answer_408=False)


class _GuardedProtocol(HttpToolsProtocol):
    connection_guard: ConnectionGuard

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # Our own reference: closing does not depend on how the parent stores its transport.
        self.guarded_transport = transport
        super().connection_made(transport)
        guard = self.connection_guard
        guard.evict(guard.table.opened(self, monotonic()))

    def connection_lost(self, exc: Exception | None) -> None:
        self.connection_guard.table.closed(self)
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        self.connection_guard.table.request_begun(self, monotonic())
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self.connection_guard.table.head_complete(self, monotonic())
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.connection_guard.table.request_complete(self, monotonic())
        super().on_message_complete()

    def on_response_complete(self) -> None:
        self.connection_guard.table.response_complete(self, monotonic())
        super().on_response_complete()

    def close_slow(self, *, answer_408: bool) -> None:
        transport = self.guarded_transport
        if transport.is_closing():
            return
        if answer_408:
            transport.write(REQUEST_TIMEOUT)
            transport.close()
        else:
            # Evicted: give the descriptor back now, not after a slow reader drains its buffer.
            transport.abort()
