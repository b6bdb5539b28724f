"""``python -m producer``"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Iterator

import structlog
import uvicorn

from common.entrypoint import run_service
from common.heap import freeze_startup_heap
from producer.api import create_app
from producer.broker import BrokerRefused
from producer.service import running_core
from producer.settings import ProducerSettings
from producer.view import SpoolUnavailable

log = structlog.get_logger("producer")

# Callbacks in flight keep their objects (request, futures, aiormq's confirmation entries) alive
# for a few milliseconds; with the defaults (700, 10, 10) the young-generation count kept
# crossing 700 on them, they were promoted, and every ~0.3 s a full collection re-scanned the
# ~89,000 objects of start-up: 37 full collections of 38 ms on average (up to 76 ms) in a 12 s
# wrk run, about 12% of the CPU and the p99. Measured with gc.callbacks at saturation (wrk -c32,
# 200-id callbacks): frozen start-up heap and a young threshold of 5,000, no collection at all
# in 10 s. The garbage per callback is acyclic, so reference counting frees it; cyclic garbage
# from an error path still starts a collection after YOUNG_GC_THRESHOLD container objects.
YOUNG_GC_THRESHOLD = 50_000


class _Server(uvicorn.Server):
    """uvicorn, stopped by the entry point's ``stop`` event instead of its own signal handlers.

    uvicorn's own handling re-raises the signal after shutting down, which would end the
    process with "killed by SIGTERM" instead of exit code 0.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def main(settings: ProducerSettings, stop: asyncio.Event) -> None:
    # Imported here, not at the top: it subclasses uvicorn's internals, which on an untested
    # uvicorn may fail to import before the start-up check can say so in one line.
    from producer.guarded_http import ConnectionGuard

    async with running_core(settings) as core:
        app = create_app(
            core.ingest,
            settings.callback_limits(),
            settings.callback_auth(),
        )
        # Slow and idle clients: deadlines for heads and bodies, and a cap that evicts the
        # connections that made the least progress (docs/slow-clients.md).
        guard = ConnectionGuard(
            settings.max_connections,
            settings.producer_header_timeout,
            settings.producer_body_timeout,
        )
        server = _Server(
            uvicorn.Config(
                app,
                host=settings.producer_host,
                port=settings.producer_port,
                http=guard.protocol_class,
                backlog=settings.connection_budget.backlog,
                # The core's life is running_core's, around the server's: the app has no lifespan.
                lifespan="off",
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

        async def graceful_exit() -> None:
            await stop.wait()
            server.should_exit = True

        refusals: list[BrokerRefused] = []

        async def exit_when_refused() -> None:
            # The broker refuses this producer for good: stop as on SIGTERM, then exit 1.
            refusals.append(await core.publisher.wait_refused())
            server.should_exit = True

        log.info(
            "http_serving",
            host=settings.producer_host,
            port=settings.producer_port,
            broker=settings.amqp_uri_masked,
            callback_auth=_auth_mode(settings),
            max_connections=settings.max_connections,
        )
        freeze_startup_heap(YOUNG_GC_THRESHOLD)
        async with asyncio.TaskGroup() as tasks:
            stopper = tasks.create_task(graceful_exit())
            refused = tasks.create_task(exit_when_refused())
            deadlines = tasks.create_task(guard.enforce_deadlines())
            await server.serve()
            stopper.cancel()
            refused.cancel()
            deadlines.cancel()
        if refusals:
            raise refusals[0]


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
    run_service(
        "producer",
        ProducerSettings,
        main,
        fast_paths=ProducerSettings.fast_paths,
        open_files=ProducerSettings.open_files,
        fatal={SpoolUnavailable: "spool_unavailable", BrokerRefused: "broker_refused"},
    )


if __name__ == "__main__":
    run()
