"""The fast status client (``STATUS_CLIENT=fast``): aiohttp's connector and
response protocol driven directly, below aiohttp's public API.

It answers exactly as :class:`consumer.status_standard.StandardStatusClient` does (the same tests
run against both; the rules are in :mod:`consumer.status`) at about half the CPU per request. It
relies on aiohttp internals, so aiohttp is pinned to the tested minor in pyproject.toml and
checked at start-up (:data:`FAST_PATH`); on an untested aiohttp, ``STATUS_CLIENT=standard``.
"""

from __future__ import annotations

import errno

import aiohttp
from aiohttp import hdrs
from aiohttp.client_reqrep import ClientRequest
from aiohttp.connector import Connection
from aiohttp.http_exceptions import HttpProcessingError
from yarl import URL

from common.versions import FastPath
from consumer.status import (
    SKIPPED_HEADERS,
    StatusFailure,
    SweptClient,
    check_length,
    connect_failure,
    parse_status,
    status_connector,
)

FAST_PATH = FastPath(("aiohttp",), "STATUS_CLIENT=standard")
"""This client drives aiohttp's connector and response protocol directly."""

_RESET_ERRNOS = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED})


class StatusClient(SweptClient):
    """``async with StatusClient(...) as client: await client.lookup(42)``.

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
    whole request) is :class:`~consumer.status.SweptClient`'s sweep, instead of a timer per
    request that aiohttp re-arms on every chunk received: with thousands in flight that
    bookkeeping was ~6% of the consumer's CPU.
    """

    _connector: aiohttp.TCPConnector | None = None

    async def _open(self) -> None:
        loop = self._start_sweeper()
        self._connect_timeout = aiohttp.ClientTimeout(
            total=None, connect=None, sock_read=None, sock_connect=self._timeout
        )
        self._connector = status_connector(self._max_connections)
        # The request every lookup sends, built by aiohttp: it carries the connection key for
        # the pool, and its head (request line, Host, Accept) is rendered once; a lookup adds
        # its id.
        self._request = ClientRequest(
            "GET",
            URL(self._base, encoded=True),
            loop=loop,
            skip_auto_headers=SKIPPED_HEADERS,
        )
        version = self._request.version
        headers = "".join(f"{name}: {value}\r\n" for name, value in self._request.headers.items())
        self._head_start = f"GET {self._request.url.raw_path}".encode()
        self._head_end = f" HTTP/{version.major}.{version.minor}\r\n{headers}\r\n".encode()

    async def close(self) -> None:
        self._stop_sweeper()
        if self._connector is not None:
            await self._connector.close()
            self._connector = None

    async def _ask(self, object_id: int) -> bool:
        connector = self._connector
        assert connector is not None
        head = b"%b%d%b" % (self._head_start, object_id, self._head_end)
        for resend in (False, True):
            try:
                connection = await connector.connect(self._request, [], self._connect_timeout)
            except TimeoutError:
                raise StatusFailure("timeout") from None
            except aiohttp.ClientError as error:
                raise connect_failure(error) from None
            try:
                status, body = await _exchange(connection, head)
            except StatusFailure:
                connection.close()
                raise
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as error:
                connection.close()
                if not resend and _is_reset(error):
                    continue
                raise connect_failure(error) from None
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
    check_length(None if length is None else int(length))
    return message.code, await payload.read()


def _is_reset(error: aiohttp.ClientError) -> bool:
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return True
    return isinstance(error, aiohttp.ClientOSError) and error.errno in _RESET_ERRNOS
