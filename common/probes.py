"""Readiness probes that look for themselves, so ``/ready`` shows an outage while idle too."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger(__name__)


class DatabaseProbe:
    """``ping()`` every ``interval`` seconds; :attr:`ok` is the last outcome. The ping is the
    store's (:meth:`common.store.ObjectStore.ping`): ``SELECT 1`` on PostgreSQL, a write on Redis.

    A consumer with nothing to write would otherwise learn of a database outage only at its next
    flush: until then it would claim to be ready. One trivial statement a second on a pooled
    connection costs the database nothing measurable.

    The statement is not cancelled when it is late: on a black-holed connection asyncpg's
    cancellation itself waits for the server (a minute), and the probe would say nothing all that
    time. A late statement is left to finish in its own task, and no second one is started
    meanwhile.
    """

    def __init__(
        self, ping: Callable[[], Awaitable[object]], *, interval: float = 1.0, timeout: float = 2.0
    ) -> None:
        self._ping = ping
        self._interval = interval
        self._timeout = timeout
        self._select: asyncio.Task[object] | None = None
        self.ok = True  # built after the pool connected

    async def check(self) -> bool:
        if self._select is None or self._select.done():
            self._select = asyncio.ensure_future(self._ping())
            # Retrieved here, so an outcome nobody waits for any more is not reported as lost.
            self._select.add_done_callback(_retrieve)
        done, _ = await asyncio.wait({self._select}, timeout=self._timeout)
        error: BaseException | None = None
        if not done:
            error = TimeoutError(f"no answer to the probe within {self._timeout:g}s")
        elif self._select.cancelled():
            error = asyncio.CancelledError("the probe was cancelled")
        else:
            # Anything, not only DATABASE_ERRORS: a probe that raised says "not ready", it must
            # never end the probing.
            error = self._select.exception()
        self._report(error)
        return self.ok

    def _report(self, error: BaseException | None) -> None:
        if error is not None and self.ok:
            log.warning("database_probe_failed", error=repr(error))
        elif error is None and not self.ok:
            log.info("database_probe_recovered")
        self.ok = error is None

    async def run(self) -> None:
        """Probe until cancelled."""
        try:
            while True:
                await self.check()
                await asyncio.sleep(self._interval)
        finally:
            if self._select is not None:
                self._select.cancel()


def _retrieve(task: asyncio.Task[object]) -> None:
    if not task.cancelled():
        with contextlib.suppress(BaseException):
            task.exception()
