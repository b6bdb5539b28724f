"""The standard status client (``STATUS_CLIENT=standard``): a plain ``aiohttp.ClientSession``.

The reference the default client (:mod:`consumer.status_httptools`) is tested against: the same
answers and failures (the rules are in :mod:`consumer.status`; the same tests run against both),
the same headers and the same timeout, through nothing below aiohttp's documented API. It costs
more CPU per request (aiohttp's request and response objects). Everything aiohttp-specific of
the status seam lives here, so that :mod:`consumer.status` imports no HTTP library.

A request that finds its kept-alive connection closed by the server is sent once more on a fresh
one: ``ClientSession`` does that itself for a GET.
"""

from __future__ import annotations

import aiohttp

from consumer.status import StatusClientBase, StatusFailure, check_length, parse_status

# Sent by neither client: no User-Agent, and no Accept-Encoding (nothing to decompress).
SKIPPED_HEADERS = ("User-Agent", "Accept-Encoding")


def status_connector(max_connections: int) -> aiohttp.TCPConnector:
    """The keep-alive pool: at most ``max_connections`` sockets (the worker never has more
    lookups in flight, so no request waits for a connection)."""
    return aiohttp.TCPConnector(
        limit=max_connections,
        limit_per_host=0,
        ttl_dns_cache=60,
        # Idle connections are kept longer than aiohttp's 15 s so that a dip in load does
        # not cost a reconnect storm on the next peak (servers keep idle ones for 75 s+).
        keepalive_timeout=30,
    )


def connect_failure(error: aiohttp.ClientError) -> StatusFailure:
    """The reason for an error raised while getting a connection or an answer on it."""
    if isinstance(error, aiohttp.ClientConnectorError):
        return StatusFailure(f"cannot connect: {error.os_error!r}")
    if isinstance(error, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError):
        return StatusFailure(f"connection lost: {error!r}")
    return StatusFailure(f"http error: {error!r}")


class StandardStatusClient(StatusClientBase):
    """``async with StandardStatusClient(...) as client: await client.lookup(42)``; built in
    the running loop, complete."""

    def __init__(self, base_url: str, *, max_connections: int, timeout: float) -> None:
        self._base = base_url.rstrip("/") + "/objects/"
        self._session = aiohttp.ClientSession(
            connector=status_connector(max_connections),
            # ``timeout`` bounds the whole request, as the httptools client's sweep does, and
            # connecting.
            timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=timeout),
            skip_auto_headers=SKIPPED_HEADERS,
            auto_decompress=False,
        )

    async def close(self) -> None:
        await self._session.close()

    async def lookup(self, object_id: int) -> bool:
        """Whether the status API says ``object_id`` is online; :class:`StatusFailure` if it
        gives no usable answer."""
        try:
            async with self._session.get(f"{self._base}{object_id}") as response:
                try:
                    check_length(response.content_length)
                except StatusFailure:
                    response.close()  # a refused body is never read: nor is its connection reused
                    raise
                body = await response.read()
        except TimeoutError:
            raise StatusFailure("timeout") from None
        except aiohttp.ClientError as error:
            raise connect_failure(error) from None
        return parse_status(object_id, response.status, body)
