"""Endpoints for tests and operators: health, ledger, stats, runtime control."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tester.knobs import InvalidControl, apply_control
from tester.status_api import STATE


async def health(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def ledger(request: web.Request) -> web.Response:
    """``?after=<seq>`` returns only records newer than ``seq``."""
    after_text = request.query.get("after", "0")
    if not after_text.isdigit() or len(after_text) > 18:
        return _json({"error": "after must be a non-negative integer"}, status=400)
    return _json(request.app[STATE].ledger.as_json(after=int(after_text)))


async def stats(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return _json({"objects": state.objects.as_json(), "callbacks": state.callbacks.as_json()})


async def reset_stats(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.objects.reset()
    state.callbacks.reset()
    return await stats(request)


async def get_control(request: web.Request) -> web.Response:
    return _json(request.app[STATE].knobs.as_json())


async def post_control(request: web.Request) -> web.Response:
    """Apply a JSON change all at once, or refuse it with 400 and change nothing."""
    state = request.app[STATE]
    try:
        state.knobs = apply_control(state.knobs, await request.read())
    except InvalidControl as error:
        return _json({"error": str(error)}, status=400)
    return _json(state.knobs.as_json())


async def metrics(request: web.Request) -> web.Response:
    """The tester's callbacks by status, ids sent and callback latency, in Prometheus format."""
    response = web.Response(body=generate_latest(request.app[STATE].metrics.registry))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/health", health)
    app.router.add_get("/ledger", ledger)
    app.router.add_get("/stats", stats)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/stats/reset", reset_stats)
    app.router.add_get("/control", get_control)
    app.router.add_post("/control", post_control)
