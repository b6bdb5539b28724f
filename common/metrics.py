"""Prometheus metrics and probes: each service builds its own registry at start and passes it down.

The producer serves ``/metrics`` on its HTTP port; services without one (consumer, routine) serve
``/metrics``, ``/health`` and ``/ready`` on ``METRICS_PORT`` when that is set
(:class:`ProbeServer`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping

import orjson
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    ProcessCollector,
    generate_latest,
)

Check = Callable[[], bool]
"""One readiness condition, e.g. "the broker connection is open". Must be cheap and not block."""


def service_registry() -> CollectorRegistry:
    """A registry with the process's CPU, memory and open files (``process_*``), for the
    dashboard's per-service panels."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    return registry


def readiness(checks: Mapping[str, Check]) -> tuple[bool, dict[str, bool]]:
    """All checks passed, and each one's result."""
    results = {name: bool(check()) for name, check in checks.items()}
    return all(results.values()), results


class ProbeServer:
    """``/metrics``, ``/health`` (the event loop answers) and ``/ready`` (every check passes:
    200, else 503, with each check's result) on the service's own event loop.

    On the loop rather than a thread: a loop too stuck to answer ``/health`` is a process that is
    not healthy.
    """

    def __init__(
        self, registry: CollectorRegistry, checks: Mapping[str, Check], service: str
    ) -> None:
        self._registry = registry
        self._checks = checks
        self._service = service
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/health", self._health)
        app.router.add_get("/ready", self._ready)
        return app

    async def _metrics(self, _: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(self._registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def _health(self, _: web.Request) -> web.Response:
        return _json({"status": "alive", "service": self._service}, 200)

    async def _ready(self, _: web.Request) -> web.Response:
        ready, results = readiness(self._checks)
        return _json({"ready": ready, **results}, 200 if ready else 503)

    async def start(self, port: int, host: str = "0.0.0.0") -> None:  # noqa: S104 - scraped from another container
        """Listen on ``port`` (0: serve nothing); :meth:`close` stops."""
        if not port:
            return
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    @contextlib.asynccontextmanager
    async def serving(
        self,
        port: int,
        host: str = "0.0.0.0",  # noqa: S104 - scraped from another container
    ) -> AsyncIterator[None]:
        """Serve while inside the block (``port`` 0: serve nothing)."""
        await self.start(port, host)
        try:
            yield
        finally:
            await self.close()


def _json(body: dict[str, object], status: int) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")
