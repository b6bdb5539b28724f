"""A status client on public, stable layers only: an asyncio ``Protocol`` per connection and
httptools' response parser (llhttp, the parser aiohttp itself uses), with a small keep-alive pool
of its own (``STATUS_CLIENT=httptools``, the default: a third less CPU per id than the
aiohttp-internals client it replaced, see docs/BENCHMARKS.md).

The same answers and failures as the standard client (the rules in :mod:`consumer.status`; the same
tests run against both) and the same head (request line, ``Host``, ``Accept: */*``); lookups are
cut off by :class:`~consumer.status.SweptClient`'s deadline sweep. What it does itself, and aiohttp
does for the standard client: the pool (LIFO, idle connections dropped after 30 s or when the
server closed them; the worker never has more than ``max_connections`` lookups in flight, so the
pool never holds more), the connect timeout (``timeout``), and the reuse rule (only after a
complete answer the parser says may be kept alive, with no bytes beyond it), ``https://`` with the
system's trust store and host-name check (``ssl.create_default_context``, which honours
``SSL_CERT_FILE``), and a resolver cache: the host's addresses are looked up at most once per
``DNS_TTL`` seconds (aiohttp's default too), one lookup at a time, new connections go to them in
turn, and when a new lookup fails the last addresses found are used until one succeeds.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from typing import cast

import httptools
from yarl import URL

from consumer.status import MAX_BODY_BYTES, StatusFailure, SweptClient, parse_status

KEEPALIVE_TIMEOUT = 30.0
DNS_TTL = 10.0


class _Lost(Exception):
    """The connection closed before the answer was complete."""


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection, one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.answer: asyncio.Future[tuple[int, bytes]] | None = None
        self.status = 0
        self.body: list[bytes] = []
        self.size = 0
        self.reusable = False
        self.idle_since = 0.0

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(StatusFailure(f"http error: {error!r}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail(_Lost(repr(exc) if exc else "closed by the server"))

    # --- httptools callbacks ---

    def on_message_begin(self) -> None:
        if self.answer is None or self.answer.done():
            self.close()  # bytes beyond the answer: nothing on this connection can be trusted
            return
        self.status, self.body, self.size = 0, [], 0

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"content-length" and int(value) > MAX_BODY_BYTES:
            self._fail(StatusFailure(f"bad body: {int(value)} bytes"))

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > MAX_BODY_BYTES:
            self._fail(StatusFailure(f"bad body: over {MAX_BODY_BYTES} bytes"))
        self.body.append(body)

    def on_message_complete(self) -> None:
        answer = self.answer
        if answer is None or answer.done():
            return
        if 100 <= self.status < 200 and self.status != 101:
            return  # informational (100 Continue, 103 Early Hints): the answer follows
        self.reusable = self.parser.should_keep_alive()
        answer.set_result((self.status, b"".join(self.body)))

    # --- used by the client ---

    def send(self, head: bytes, answer: asyncio.Future[tuple[int, bytes]]) -> None:
        assert self.transport is not None
        self.answer = answer
        self.reusable = False
        self.transport.write(head)

    def usable(self, idle_after: float) -> bool:
        transport = self.transport
        return transport is not None and not transport.is_closing() and self.idle_since > idle_after

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()

    def _fail(self, error: Exception) -> None:
        self.reusable = False
        answer = self.answer
        if answer is not None and not answer.done():
            answer.set_exception(error)
        if self.transport is not None:
            self.transport.close()


class HttptoolsStatusClient(SweptClient):
    """``async with HttptoolsStatusClient(...) as client: await client.lookup(42)``; built in
    the running loop, complete."""

    def __init__(self, base_url: str, *, max_connections: int, timeout: float) -> None:
        url = URL(base_url.rstrip("/") + "/objects/", encoded=True)
        if url.scheme not in ("http", "https") or url.raw_host is None:
            raise ValueError("STATUS_CLIENT=httptools speaks http:// and https:// only")
        self._host = url.raw_host
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._ssl = ssl.create_default_context() if url.scheme == "https" else None
        host = self._host if url.is_default_port() else f"{self._host}:{self._port}"
        self._head_start = f"GET {url.raw_path}".encode()
        self._head_end = f" HTTP/1.1\r\nHost: {host}\r\nAccept: */*\r\n\r\n".encode()
        self._idle: list[_Connection] = []
        self._addresses: list[str] = []
        self._resolved_at = -DNS_TTL
        self._resolving: asyncio.Future[list[str]] | None = None
        self._turn = 0
        # Last: it starts the sweep, which close() ends.
        super().__init__(base_url, max_connections=max_connections, timeout=timeout)

    async def close(self) -> None:
        await super().close()
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    async def _ask(self, object_id: int) -> bool:
        loop = self._loop
        head = b"%b%d%b" % (self._head_start, object_id, self._head_end)
        for resend in (False, True):
            connection = await self._connect() if resend else await self._take()
            answer: asyncio.Future[tuple[int, bytes]] = loop.create_future()
            connection.send(head, answer)
            try:
                status, body = await answer
            except _Lost as lost:
                if not resend:
                    continue  # closed by the server (the keep-alive race): once more, fresh
                raise StatusFailure(f"connection lost: {lost}") from None
            except BaseException:  # a refused answer, or cancelled: the connection is done
                connection.close()
                raise
            self._release(connection)
            return parse_status(object_id, status, body)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _take(self) -> _Connection:
        idle_after = time.monotonic() - KEEPALIVE_TIMEOUT
        idle = self._idle
        while idle:
            connection = idle.pop()
            if connection.usable(idle_after):
                return connection
            connection.close()
        return await self._connect()

    async def _connect(self) -> _Connection:
        loop = self._loop
        try:
            async with asyncio.timeout(self._timeout):
                addresses = await self._resolve()
                self._turn = turn = (self._turn + 1) % len(addresses)
                _, connection = await loop.create_connection(
                    _Connection,
                    addresses[turn],
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl else None,
                )
        except TimeoutError:
            raise StatusFailure("timeout") from None
        except (OSError, ssl.SSLError) as error:
            raise StatusFailure(f"cannot connect: {error!r}") from None
        return connection

    async def _resolve(self) -> list[str]:
        """The host's addresses, looked up again after ``DNS_TTL``; callers that arrive while a
        lookup runs share it."""
        if time.monotonic() - self._resolved_at < DNS_TTL:
            return self._addresses
        if self._resolving is None:
            self._resolving = asyncio.ensure_future(self._lookup())
            # Its failure is each waiter's; if every waiter was cancelled, nobody else's.
            self._resolving.add_done_callback(lambda done: done.cancelled() or done.exception())
        return await asyncio.shield(self._resolving)

    async def _lookup(self) -> list[str]:
        loop = self._loop
        try:
            found = await loop.getaddrinfo(self._host, self._port, type=socket.SOCK_STREAM)
            addresses = list(dict.fromkeys(str(info[4][0]) for info in found))
            if not addresses:
                raise OSError(f"no address for {self._host}")
        except OSError:
            if not self._addresses:
                raise
            # The resolver is away, not the host: keep connecting to the addresses it last gave
            # (asked again on the next new connection), rather than fail every lookup meanwhile.
            return self._addresses
        else:
            self._addresses, self._resolved_at = addresses, time.monotonic()
            return addresses
        finally:
            self._resolving = None

    def _release(self, connection: _Connection) -> None:
        if connection.reusable and len(self._idle) < self._max_connections:
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            connection.close()
