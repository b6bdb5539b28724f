"""The status lookup seam: what the worker asks, and the answer rules every client shares.

An answer counts only if it is HTTP 200 with a JSON object holding the requested integer ``id``
and a boolean ``online``. Everything else (a timeout, a refused or reset connection, a 5xx, a
body that is not that JSON, one over :data:`MAX_BODY_BYTES`) raises :class:`StatusFailure` with a
short reason, which the worker turns into a delayed retry.

Two clients implement :class:`StatusLookup` with the same answers and pool limits:
``STATUS_CLIENT=httptools`` (:mod:`consumer.status_httptools`, the default: httptools' parser on
an asyncio protocol, public layers only, the least CPU per id) and ``STATUS_CLIENT=standard``
(:mod:`consumer.status_standard`, a plain ``aiohttp.ClientSession``: the reference the other is
tested against). This module imports no HTTP library: each client brings its own.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import deque
from types import TracebackType
from typing import Any, Literal, Protocol, Self

import orjson

StatusClientKind = Literal["httptools", "standard"]

MAX_BODY_BYTES = 4096


class StatusFailure(Exception):
    """No usable answer for one id this time; worth a later retry."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StatusLookup(Protocol):
    """Whether an id is online, per the status API."""

    async def lookup(self, object_id: int) -> bool:
        """The ``online`` flag for ``object_id``; :class:`StatusFailure` if there is no usable
        answer this time."""
        ...

    async def close(self) -> None:
        """Close the pooled connections; in-flight lookups are the caller's to finish first."""
        ...


class StatusClientBase:
    """A client built complete, in the running loop; ``async with`` closes it on exit."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        raise NotImplementedError


class SweptClient(StatusClientBase):
    """A client whose lookups are cut off after ``timeout`` by one sweep every
    ``sweep_interval`` over a FIFO of deadlines, instead of a timer per request: with thousands
    in flight, per-request timers were ~6% of the consumer's CPU. A lookup is cut off between
    ``timeout`` and ``timeout + sweep_interval``. The sweep starts here, in the running loop, and
    :meth:`close` ends it: a subclass checks its arguments before it calls this. Subclasses
    implement :meth:`_ask`."""

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
        self._loop = asyncio.get_running_loop()
        self._sweeper = self._loop.create_task(self._sweep())

    async def close(self) -> None:
        """End the sweep (a subclass closes its connections after this)."""
        self._sweeper.cancel()
        await asyncio.wait([self._sweeper])

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

    async def lookup(self, object_id: int) -> bool:
        """Whether the status API says ``object_id`` is online; :class:`StatusFailure` if it
        gives no usable answer."""
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
        raise NotImplementedError


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


def check_length(content_length: int | None) -> None:
    """Refuse an announced body over :data:`MAX_BODY_BYTES` before reading it."""
    if content_length is not None and content_length > MAX_BODY_BYTES:
        raise StatusFailure(f"bad body: {content_length} bytes")
