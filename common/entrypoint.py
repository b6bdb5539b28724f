"""One way to run a service: settings → logging → library check → run until a signal → exit code.

Exit codes, the same for every service: 0 after a clean stop (SIGTERM or SIGINT), 2 for a bad
configuration, an open-file limit too low for it, or an untested library version behind a fast
path (an operator's fix, no traceback),
1 when a dependency stays away past the start-up deadline or a fatal error named by the service
ends it (one logged line each).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import NoReturn, TypeVar

import structlog
import uvloop

from common.log import configure_logging
from common.open_files import OpenFileLimitTooLow, OpenFiles, ensure_open_files
from common.retrying import DependencyUnavailable
from common.settings import ServiceSettings, load_settings
from common.versions import FastPath, UntestedLibrary, check_fast_paths

S = TypeVar("S", bound=ServiceSettings)

Main = Callable[[S, asyncio.Event], Awaitable[None]]
"""A service's body: runs until ``stop`` is set, then returns."""


def run_service(
    service: str,
    model: type[S],
    main: Main[S],
    *,
    fast_paths: Callable[[S], Iterable[FastPath]] = lambda _: (),
    open_files: Callable[[S], OpenFiles] | None = None,
    fatal: Mapping[type[BaseException], str] | None = None,
) -> NoReturn:
    """Run ``main(settings, stop)`` on uvloop and exit with the service's exit code.

    ``fast_paths`` names the fast paths the settings select, checked before anything connects;
    ``open_files`` the descriptors the settings need, for which the soft limit is raised first;
    ``fatal`` maps exceptions that end the service to the event logged for them (exit 1).
    """
    settings = load_settings(model, service)
    configure_logging(service, settings.log_level, settings.log_format)
    log = structlog.get_logger(service)
    if open_files is not None:
        try:
            raised = ensure_open_files(open_files(settings))
        except OpenFileLimitTooLow as error:
            sys.stderr.write(f"{service}: configuration error: {error}\n")
            sys.stderr.flush()
            raise SystemExit(2) from None
        if raised:
            log.info("open_file_limit_raised", soft_before=raised[0], soft=raised[1])
    try:
        check_fast_paths(fast_paths(settings))
    except UntestedLibrary as error:
        sys.stderr.write(f"{service}: {error}\n")
        sys.stderr.flush()
        raise SystemExit(2) from None
    stopping: dict[type[BaseException], str] = {DependencyUnavailable: "dependency_unavailable"}
    stopping.update(fatal or {})
    try:
        uvloop.run(_until_signal(main, settings))
    except tuple(stopping) as error:
        event = next(name for kind, name in stopping.items() if isinstance(error, kind))
        log.error(event, error=str(error))
        log.info("service_exited", code=1)
        raise SystemExit(1) from None
    log.info("service_exited", code=0)
    raise SystemExit(0)


async def _until_signal(main: Main[S], settings: S) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await main(settings, stop)
