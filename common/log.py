"""structlog, configured once per process in its entry point."""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson
import structlog


def configure_logging(service: str, level: str = "info", fmt: str | None = None) -> None:
    """Route structlog and the standard library's logging to stdout.

    JSON lines unless stdout is a terminal or ``fmt == "console"``. Every line carries
    ``service``; per-unit-of-work context (``callback_id``, ``message_id``) is bound with
    :func:`structlog.contextvars.bind_contextvars` and merged first.
    """
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    use_console = fmt == "console" or (fmt is None and sys.stdout.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if use_console:
        renderer: Any = structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
        logger_factory: Any = structlog.PrintLoggerFactory(sys.stdout)
    else:
        renderer = structlog.processors.JSONRenderer(serializer=orjson.dumps)
        logger_factory = structlog.BytesLoggerFactory(sys.stdout.buffer)
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=logger_factory,
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)
    _route_stdlib(numeric_level, use_console)


def _route_stdlib(level: int, use_console: bool) -> None:
    """Send library logs (aio-pika, uvicorn, asyncpg) through the same renderer."""
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
        if use_console
        else structlog.processors.JSONRenderer()
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_logger_name,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Google's clients keep their "google" logger from reaching the root unless it is configured
    # in code (google.api_core.client_logging): its errors went to stderr as bare text. Given a
    # level here, it is left alone and propagates like every other library's.
    google = logging.getLogger("google")
    google.setLevel(logging.NOTSET if level <= logging.DEBUG else logging.WARNING)
    google.propagate = True
    # Library chatter at INFO (every reconnect attempt of aiormq, every access line) drowns the
    # service's own events; those libraries speak at WARNING and above unless asked for debug.
    root.setLevel(level if level <= logging.DEBUG else max(level, logging.WARNING))
    transport_errors = logging.getLogger("aiormq.connection")
    if not any(isinstance(f, _DuplicateConnectError) for f in transport_errors.filters):
        transport_errors.addFilter(_DuplicateConnectError())


class _DuplicateConnectError(logging.Filter):
    """aiormq logs every failed connect at ERROR, then raises; our callers log the same error
    once more with what to do about it (``connect_retry``, ``dependency_unavailable``). Keep
    theirs, so a refused certificate is one line, not two."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("error when creating transport")
