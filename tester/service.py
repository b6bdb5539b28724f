"""Run the tester: serve the status API and send callbacks until told to stop."""

from __future__ import annotations

import asyncio
import resource

import httpx
import structlog
from aiohttp import web

from common.durations import format_duration
from tester.app import make_app, make_runner
from tester.callbacks import run_callbacks
from tester.settings import TesterSettings
from tester.state import TesterState

log = structlog.get_logger()

# Thousands of clients connect at once in the load tests; the kernel caps this at somaxconn.
LISTEN_BACKLOG = 8192


def raise_open_files_limit() -> int:
    """Lift the soft limit on open files to the hard one: each in-flight request holds a socket."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            log.warning("open_files_limit_not_raised", soft=soft, hard=hard)
    return soft


class CannotListen(OSError):
    """The status API's address cannot be bound (in use, no such address)."""


async def serve(settings: TesterSettings, stop: asyncio.Event) -> None:
    """Until ``stop`` is set; then stop sending, stop serving, and return."""
    state = TesterState.from_settings(settings)
    open_files = raise_open_files_limit()
    runner = make_runner(make_app(state))
    await runner.setup()
    try:
        site = web.TCPSite(
            runner, settings.tester_host, settings.tester_port, backlog=LISTEN_BACKLOG
        )
        try:
            await site.start()
        except OSError as error:
            address = f"{settings.tester_host}:{settings.tester_port}"
            raise CannotListen(f"cannot listen on {address}: {error}") from error
        log.info(
            "tester_listening",
            host=settings.tester_host,
            port=_bound_port(runner),
            callback_url=settings.callback_url,
            interval=format_duration(settings.tester_interval),
            seed=settings.tester_seed,
            open_files_limit=open_files,
            **state.knobs.as_json(),
        )
        async with httpx.AsyncClient() as client:
            callbacks = asyncio.create_task(run_callbacks(state, client), name="callbacks")
            try:
                await stop.wait()
            finally:
                callbacks.cancel()
                await asyncio.gather(callbacks, return_exceptions=True)
        log.info("tester_stopping", callbacks_sent=state.callbacks.sent)
    finally:
        await runner.cleanup()


def _bound_port(runner: web.AppRunner) -> int | None:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return None
