"""``GET /objects/{id}``: the status API the consumers call, with its faults."""

from __future__ import annotations

import asyncio

from aiohttp import web

from tester.choices import (
    Fault,
    choose_delay,
    choose_fault,
    garbage_body,
    object_body,
    parse_object_id,
)
from tester.state import TesterState

STATE = web.AppKey("state", TesterState)


async def get_object(request: web.Request) -> web.Response:
    """``{"id":N,"online":N is even}`` after a random delay, unless a fault was drawn.

    Served as ``text/plain; charset=utf-8``, as Go's net/http sniffs the original's JSON body (it
    sets no Content-Type): a consumer must parse the body whatever the header says.
    """
    state = request.app[STATE]
    object_id = parse_object_id(request.match_info["id"])
    if object_id is None:
        state.objects.refused()
        return _text(400, "invalid id\n")
    knobs = state.knobs
    fault = choose_fault(state.object_rng, knobs.rates)
    delay = choose_delay(state.object_rng, knobs.delay_min, knobs.delay_max)
    state.objects.started(object_id)
    answered: Fault | None = None
    try:
        if fault is Fault.HANG:
            # Until the client gives up: aiohttp cancels the handler when the connection closes.
            await asyncio.Event().wait()
        await asyncio.sleep(delay)
        answered = fault
    finally:
        state.objects.finished(object_id, answered)
    if fault is Fault.ERROR:
        return _text(500, "Internal Server Error\n")
    if fault is Fault.GARBAGE:
        return _answer(200, garbage_body(state.object_rng, object_id))
    return _answer(200, object_body(object_id))


def _text(status: int, text: str) -> web.Response:
    return _answer(status, text.encode())


def _answer(status: int, body: bytes) -> web.Response:
    return web.Response(status=status, body=body, content_type="text/plain", charset="utf-8")


def add_routes(app: web.Application) -> None:
    # Any tail, not only one segment: the original answers 400 for "/objects/" and "/objects/1/2".
    app.router.add_get("/objects/{id:.*}", get_object)
