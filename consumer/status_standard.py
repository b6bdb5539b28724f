"""The standard status client (``STATUS_CLIENT=standard``): a plain ``aiohttp.ClientSession``.

The public-API twin of :class:`consumer.status_client.StatusClient`, with the same answers and
failures (the rules are in :mod:`consumer.status`; the same tests run against both), the same
pool (:func:`consumer.status.status_connector`), the same headers and the same timeout. It costs
more CPU per request (aiohttp's request and response objects), but relies on nothing below
aiohttp's documented API: the fallback on an aiohttp version the fast client was not tested with.

A request that finds its kept-alive connection closed by the server is sent once more on a fresh
one: ``ClientSession`` does that itself for a GET.
"""

from __future__ import annotations

import aiohttp

from consumer import status
from consumer.status import StatusClientBase, StatusFailure


class StandardStatusClient(StatusClientBase):
    """``async with StandardStatusClient(...) as client: await client.lookup(42)``."""

    def __init__(self, base_url: str, *, max_connections: int, timeout: float) -> None:
        self._base = base_url.rstrip("/") + "/objects/"
        self._max_connections = max_connections
        # ``timeout`` bounds the whole request, as the fast client's sweep does, and connecting.
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def _open(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=status.status_connector(self._max_connections),
            timeout=self._timeout,
            skip_auto_headers=status.SKIPPED_HEADERS,
            auto_decompress=False,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def lookup(self, object_id: int) -> bool:
        """Whether the status API says ``object_id`` is online; :class:`StatusFailure` if it
        gives no usable answer."""
        session = self._session
        assert session is not None, "use StandardStatusClient as an async context manager"
        try:
            async with session.get(f"{self._base}{object_id}") as response:
                try:
                    status.check_length(response.content_length)
                except StatusFailure:
                    response.close()  # a refused body is never read: nor is its connection reused
                    raise
                body = await response.read()
        except TimeoutError:
            raise StatusFailure("timeout") from None
        except aiohttp.ClientError as error:
            raise status.connect_failure(error) from None
        return status.parse_status(object_id, response.status, body)
