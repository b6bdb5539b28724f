"""Asking the status API whether an id is online: aiohttp (one connection pool per process).

An answer counts only if it is HTTP 200 with a JSON object holding the requested integer ``id``
and a boolean ``online``. Everything else (a timeout, a refused or reset connection, a 5xx, a
body that is not that JSON) raises :class:`StatusFailure` with a short reason, which the worker
turns into a delayed retry.
"""

from __future__ import annotations

import asyncio
import errno
import time
import weakref
from collections import deque
from types import TracebackType
from typing import Any

import aiohttp
import orjson
from aiohttp import hdrs
from aiohttp.client_reqrep import ClientRequest
from aiohttp.connector import Connection
from aiohttp.http_exceptions import HttpProcessingError
from yarl import URL

from common.versions import FastPath

FAST_PATH = FastPath(("aiohttp",), "STATUS_CLIENT=standard")
"""This client drives aiohttp's connector and response protocol directly."""

MAX_BODY_BYTES = 4096
_RESET_ERRNOS = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED})


class StatusFailure(Exception):
    """No usable answer for one id this time; worth a later retry."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_status(object_id: int, http_status: int, body: bytes) -> bool:
    """The ``online`` flag of a status answer, or :class:`StatusFailure` saying what is wrong."""
    if http_status != 200:
        raise StatusFailure(f"http {http_status}")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise StatusFailure("bad body: not JSON") from None
    if not isinstance(data, dict):
        raise StatusFailure("bad body: not a JSON object")
    answered_id = data.get("id")
    if type(answered_id) is not int:
        raise StatusFailure("bad body: id is not an integer")
    if answered_id != object_id:
        raise StatusFailure(f"wrong id: asked {object_id}, answered {answered_id}")
    online = data.get("online")
    if type(online) is not bool:
        raise StatusFailure("bad body: online is not a boolean")
    return online


class StatusClient:
    """``async with StatusClient(...) as client: await client.online(42)``.

    aiohttp does the HTTP: its ``TCPConnector`` pools the keep-alive connections (``limit`` =
    ``max_connections``, connect timeout, DNS cache), its ``ResponseHandler`` protocol and C
    parser (llhttp) read the answers and decide whether a connection may be reused. What this
    class skips is aiohttp's per-request object layer (``ClientSession._request``,
    ``ClientRequest``, ``ClientResponse``, ``StreamWriter``), which was ~60% of aiohttp's CPU
    per request here: every lookup is the same GET with one path segment changed, so the
    request head is rendered once, from a ``ClientRequest`` aiohttp builds at start, and a
    lookup writes that head with its id on a pooled connection and reads aiohttp's parsed
    answer (0.164 -> 0.090 ms CPU per request at 7,000 in flight; see docs/consumer.md).

    The worker never asks for more than ``max_connections`` lookups at once, so no request
    waits for a connection. A request that finds its kept-alive connection closed by the server
    (the keep-alive race) is sent once more on a fresh one.

    Timeouts: aiohttp enforces the connect timeout on new connections; the read timeout (the
    whole request, ``timeout`` seconds) is enforced here by one sweep every
    ``sweep_interval`` over a FIFO of deadlines, instead of a timer per request that aiohttp
    re-arms on every chunk received: with thousands in flight that bookkeeping was ~6% of the
    consumer's CPU. A request is cut off between ``timeout`` and ``timeout + sweep_interval``.
    """

    def __init__(
        self,
        base_url: str,
        *,
        max_connections: int,
        timeout: float,
        sweep_interval: float = 0.1,
    ) -> None:
        self._base = base_url.rstrip("/") + "/objects/"
        self._max_connections = max_connections
        self._timeout = timeout
        self._sweep_interval = min(sweep_interval, timeout)
        self._deadlines: deque[tuple[float, weakref.ref[asyncio.Task[Any]]]] = deque()
        self._expired: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._connector: aiohttp.TCPConnector | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connect_timeout = aiohttp.ClientTimeout(
            total=None, connect=None, sock_read=None, sock_connect=timeout
        )

    async def __aenter__(self) -> StatusClient:
        self._loop = loop = asyncio.get_running_loop()
        self._connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            limit_per_host=0,
            ttl_dns_cache=60,
            # Idle connections are kept longer than aiohttp's 15 s so that a dip in load does
            # not cost a reconnect storm on the next peak (servers keep idle ones for 75 s+).
            keepalive_timeout=30,
        )
        # The request every lookup sends, built by aiohttp: it carries the connection key for
        # the pool, and its head (request line, Host, Accept; no User-Agent, no
        # Accept-Encoding: nothing to decompress) is rendered once; a lookup adds its id.
        self._request = ClientRequest(
            "GET",
            URL(self._base, encoded=True),
            loop=loop,
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
        )
        version = self._request.version
        headers = "".join(f"{name}: {value}\r\n" for name, value in self._request.headers.items())
        self._head_start = f"GET {self._request.url.raw_path}".encode()
        self._head_end = f" HTTP/{version.major}.{version.minor}\r\n{headers}\r\n".encode()
        self._sweeper = loop.create_task(self._sweep())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._connector is not None:
            await self._connector.close()
            self._connector = None

    async def _sweep(self) -> None:
        deadlines, expired = self._deadlines, self._expired
        while True:
            await asyncio.sleep(self._sweep_interval)
            now = time.monotonic()
            while deadlines and deadlines[0][0] <= now:
                task = deadlines.popleft()[1]()
                if task is not None and not task.done():
                    expired.add(task)
                    task.cancel()

    async def online(self, object_id: int) -> bool:
        """Whether the status API says ``object_id`` is online; :class:`StatusFailure` if it
        gives no usable answer."""
        assert self._connector is not None, "use StatusClient as an async context manager"
        # With the loop given, current_task() skips get_running_loop() and its getpid() call.
        task = asyncio.current_task(self._loop)
        assert task is not None
        # The timeout cancels the calling task, so each lookup needs a task of its own that ends
        # when this call returns. A weak reference: a finished task is freed at once, not kept
        # until its deadline passes.
        self._deadlines.append((time.monotonic() + self._timeout, weakref.ref(task)))
        try:
            return await self._ask(object_id)
        except asyncio.CancelledError:
            if task not in self._expired:
                raise
            task.uncancel()
            raise StatusFailure("timeout") from None
        finally:
            self._expired.discard(task)

    async def _ask(self, object_id: int) -> bool:
        connector = self._connector
        assert connector is not None
        head = b"%b%d%b" % (self._head_start, object_id, self._head_end)
        for resend in (False, True):
            try:
                connection = await connector.connect(self._request, [], self._connect_timeout)
            except aiohttp.ClientConnectorError as error:
                raise StatusFailure(f"cannot connect: {error.os_error!r}") from None
            except TimeoutError:
                raise StatusFailure("timeout") from None
            except aiohttp.ClientError as error:
                raise StatusFailure(f"http error: {error!r}") from None
            try:
                status, body = await _exchange(connection, head)
            except StatusFailure:
                connection.close()
                raise
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as error:
                connection.close()
                if not resend and _is_reset(error):
                    continue
                raise StatusFailure(f"connection lost: {error!r}") from None
            except (aiohttp.ClientError, HttpProcessingError) as error:
                connection.close()
                raise StatusFailure(f"http error: {error!r}") from None
            except BaseException:  # cancelled (the timeout sweep, shutdown): state unknown
                connection.close()
                raise
            # Back to the pool, unless aiohttp's protocol says the connection cannot be reused
            # (``Connection: close``, an unread body, bytes beyond the answer, an error).
            connection.release()
            return parse_status(object_id, status, body)
        raise AssertionError("unreachable")  # pragma: no cover


async def _exchange(connection: Connection, head: bytes) -> tuple[int, bytes]:
    """Send ``head`` on ``connection`` and read the answer with aiohttp's protocol: its status
    and body."""
    protocol = connection.protocol
    assert protocol is not None
    protocol.set_response_params(auto_decompress=False)
    transport = protocol.transport
    if transport is None or transport.is_closing():
        # Closed by the server while idle in the pool: the keep-alive race.
        raise aiohttp.ServerDisconnectedError()
    transport.write(head)
    message, payload = await protocol.read()
    while 100 <= message.code < 200 and message.code != 101:
        # Informational (100 Continue, 103 Early Hints): the answer follows, as aiohttp's
        # ClientResponse does it.
        message, payload = await protocol.read()
    length = message.headers.get(hdrs.CONTENT_LENGTH)
    if length is not None and int(length) > MAX_BODY_BYTES:
        raise StatusFailure(f"bad body: {length} bytes")
    return message.code, await payload.read()


def _is_reset(error: aiohttp.ClientError) -> bool:
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return True
    return isinstance(error, aiohttp.ClientOSError) and error.errno in _RESET_ERRNOS
