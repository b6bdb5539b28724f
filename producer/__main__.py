"""``python -m producer``"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import sys
from collections.abc import Iterator

import structlog
import uvicorn
import uvloop

from common.log import configure_logging
from common.settings import load_settings
from producer.api import create_app
from producer.ingest import Ingest
from producer.publisher import Publisher
from producer.settings import ProducerSettings
from producer.spool import Spool, SpoolUnavailable

log = structlog.get_logger("producer")


class _Server(uvicorn.Server):
    """uvicorn, with SIGTERM/SIGINT as loop handlers that only start a graceful shutdown.

    uvicorn's own handling re-raises the signal after shutting down, which would end the
    process with "killed by SIGTERM" instead of exit code 0.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.handle_exit, signum, None)
        try:
            yield
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)


async def main(settings: ProducerSettings) -> None:
    spool = await Spool.open(settings.spool_path)
    try:
        publisher = Publisher(
            settings.amqp_uri,
            settings.queue_name,
            max_backoff=settings.broker_max_backoff,
            ssl_context=settings.amqp_ssl_context(),
        )
        app = create_app(Ingest(settings, publisher, spool))
        server = _Server(
            uvicorn.Config(
                app,
                host=settings.producer_host,
                port=settings.producer_port,
                http="httptools",
                lifespan="on",
                access_log=False,
                log_config=None,
                server_header=False,
                timeout_graceful_shutdown=math.ceil(settings.shutdown_grace),
                # uvicorn's default of 5 s equals the tester's interval: the server closed the
                # idle connection just as the client reused it, and the callback failed with a
                # read error (seen in a soak run). Go's server, as the original used it, never
                # closes idle connections; 75 s outlasts any sane client interval.
                timeout_keep_alive=math.ceil(settings.keepalive_timeout),
            )
        )
        log.info(
            "http_serving",
            host=settings.producer_host,
            port=settings.producer_port,
            broker=settings.amqp_uri_masked,
            callback_auth=_auth_mode(settings),
        )
        await server.serve()
    finally:
        await spool.close()


def _auth_mode(settings: ProducerSettings) -> str:
    modes = [
        name
        for name, on in (
            ("signature", settings.callback_signing_secrets),
            ("bearer", settings.callback_bearer_token),
        )
        if on
    ]
    return "+".join(modes) or "off"


def run() -> None:
    settings = load_settings(ProducerSettings, "producer")
    configure_logging("producer", settings.log_level, settings.log_format)
    try:
        uvloop.run(main(settings))
    except SpoolUnavailable as error:
        log.error("spool_unavailable", error=str(error))
        sys.exit(1)
    log.info("producer_exited")


if __name__ == "__main__":
    run()
