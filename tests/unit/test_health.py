"""The image's health check: a URL for HTTP services, a heartbeat file for the others."""

import asyncio
import contextlib
import os
import time
from pathlib import Path

import pytest
from aiohttp import web

from common import healthcheck
from common.heartbeat import beat_forever, is_fresh
from tests.support.waiting import eventually

pytestmark = pytest.mark.unit


async def test_the_heartbeat_is_fresh_while_the_loop_runs(tmp_path: Path) -> None:
    path = tmp_path / "heartbeat"
    assert not is_fresh(path)
    beating = asyncio.create_task(beat_forever(path, interval=0.05))
    try:
        await eventually(lambda: _fresh(path), timeout=5, interval=0.01, what="first beat")
        os.utime(path, (time.time() - 60, time.time() - 60))
        assert not is_fresh(path, max_age=30)
        # The loop is alive, so it touches the file again.
        await eventually(lambda: _fresh(path), timeout=5, interval=0.01, what="next beat")
    finally:
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beating


async def test_a_url_health_check_needs_a_2xx(monkeypatch: pytest.MonkeyPatch) -> None:
    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def sick(_: web.Request) -> web.Response:
        return web.Response(status=503)

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/sick", sick)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        for path, expected in (("/health", True), ("/sick", False)):
            monkeypatch.setenv("HEALTHCHECK_URL", f"http://127.0.0.1:{port}{path}")
            assert await asyncio.to_thread(healthcheck.healthy) is expected
    finally:
        await runner.cleanup()
    monkeypatch.setenv("HEALTHCHECK_URL", f"http://127.0.0.1:{port}/health")
    assert await asyncio.to_thread(healthcheck.healthy) is False  # nothing listens any more


async def _fresh(path: Path) -> bool:
    return is_fresh(path, max_age=1)
