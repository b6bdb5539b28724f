"""The tester's HTTP application: status API plus the control endpoints."""

from __future__ import annotations

from aiohttp import web

from tester import control_api, status_api
from tester.state import TesterState

_MAX_BODY = 64 * 1024  # /control bodies are tiny; anything bigger gets 413


def make_app(state: TesterState) -> web.Application:
    app = web.Application(client_max_size=_MAX_BODY)
    app[status_api.STATE] = state
    status_api.add_routes(app)
    control_api.add_routes(app)
    return app


def make_runner(app: web.Application) -> web.AppRunner:
    """A runner that cancels a handler when its client disconnects.

    That is how a hung request ends, and why the in-flight count drops when a client gives up.
    On shutdown, handlers still waiting are cancelled after a short grace: a test tool's pending
    answers are not worth holding a stop for.
    """
    return web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
