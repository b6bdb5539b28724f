"""Readiness probes that look for themselves, so ``/ready`` shows an outage while idle too."""

from __future__ import annotations

import asyncio

import structlog

from common.db import DATABASE_ERRORS, Executor

log = structlog.get_logger(__name__)


class DatabaseProbe:
    """``SELECT 1`` every ``interval`` seconds; :attr:`ok` is the last outcome.

    A consumer with nothing to write would otherwise learn of a database outage only at its next
    flush: until then it would claim to be ready. One trivial statement a second on a pooled
    connection costs the database nothing measurable.
    """

    def __init__(self, db: Executor, *, interval: float = 1.0, timeout: float = 2.0) -> None:
        self._db = db
        self._interval = interval
        self._timeout = timeout
        self.ok = True  # built after the pool connected

    async def check(self) -> bool:
        try:
            async with asyncio.timeout(self._timeout):
                await self._db.fetchval("SELECT 1")
        except DATABASE_ERRORS as error:
            if self.ok:
                log.warning("database_probe_failed", error=repr(error))
            self.ok = False
        else:
            if not self.ok:
                log.info("database_probe_recovered")
            self.ok = True
        return self.ok

    async def run(self) -> None:
        """Probe until cancelled."""
        while True:
            await self.check()
            await asyncio.sleep(self._interval)
