"""``python -m liveview [--once] [--json]``: the suite at a glance, redrawn every second.

Reads the services' ``/metrics``, RabbitMQ's management API and the store (PostgreSQL, or Redis
with ``STORE=redis``) directly (no Prometheus server needed). Settings come from the environment
and ``.env`` (``--env-file``) through the services' own settings models (liveview/settings.py);
the flags override them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections import deque
from datetime import UTC, datetime

import httpx
import orjson

from liveview.settings import Config, ConfigurationError, load_config
from liveview.snapshot import Reading, render_text, summarize
from liveview.sources import (
    QueueDepths,
    Samples,
    SourceDown,
    Table,
    expand_hosts,
    read_metrics,
    read_queues,
    read_redis,
    read_table,
)

# Each source gets this long per refresh: one that does not answer must not stall the others.
SOURCE_TIMEOUT = 0.8
WINDOW = 10.0  # seconds of readings behind the rates and the lag p99
CLEAR = "\x1b[H\x1b[2J"


async def _bounded(what: str, reading: object) -> object:
    """One source's read with a deadline. The single broad catch of the view: whatever goes wrong
    with one source becomes that source's cell, never a traceback."""
    try:
        async with asyncio.timeout(SOURCE_TIMEOUT):
            return await reading  # type: ignore[misc]
    except SourceDown as down:
        return down
    except TimeoutError:
        return SourceDown("unreachable", f"{what}: no answer within {SOURCE_TIMEOUT:g}s")
    except Exception as error:  # noqa: BLE001 - a source's boundary, see the docstring
        return SourceDown("unreachable", f"{what}: {type(error).__name__}: {error}")


async def read_all(config: Config, client: httpx.AsyncClient, loop_time: float) -> Reading:
    consumer_urls = [url for base in config.consumers for url in await expand_hosts(base)]
    if config.redis is not None:
        store = read_redis(config.redis)
    else:
        assert config.database is not None  # noqa: S101 - load_config sets one of the two
        store = read_table(config.database)
    results = await asyncio.gather(
        _bounded("producer", read_metrics(client, config.producer, "producer")),
        _bounded("rabbitmq", read_queues(client, config.broker, config.queue_name)),
        _bounded(config.store_name, store),
        *(
            _bounded(f"consumer {url}", read_metrics(client, url, f"consumer {url}"))
            for url in consumer_urls
        ),
    )
    producer, queues, table, *consumers = results
    # gather() loses the per-source types; each source returns its own or SourceDown.
    assert isinstance(producer, dict | SourceDown)  # noqa: S101 - narrows a type, never false
    assert isinstance(queues, QueueDepths | SourceDown)  # noqa: S101 - narrows a type
    assert isinstance(table, Table | SourceDown)  # noqa: S101 - narrows a type
    consumer_samples: list[Samples | SourceDown] = [
        c for c in consumers if isinstance(c, dict | SourceDown)
    ]
    return Reading(
        loop_time, datetime.now(UTC), producer, consumer_samples, queues, table, config.store_name
    )


async def run(config: Config, *, once: bool, as_json: bool, interval: float) -> None:
    loop = asyncio.get_running_loop()
    readings: deque[Reading] = deque()
    async with httpx.AsyncClient(timeout=SOURCE_TIMEOUT) as client:
        while True:
            started = loop.time()
            readings.append(await read_all(config, client, started))
            while readings[-1].at - readings[0].at > WINDOW:
                readings.popleft()
            if once and len(readings) < 2:
                # Rates need two readings: a second one, ``interval`` later.
                await asyncio.sleep(max(0.0, interval - (loop.time() - started)))
                continue
            snapshot = summarize(list(readings))
            if as_json:
                text = orjson.dumps(snapshot.as_json()).decode() + "\n"
            else:
                text = render_text(
                    snapshot, title=f"lastseen live view - queue {config.queue_name}"
                )
                if not once:
                    text = CLEAR + text + f"\n(every {interval:g}s; Ctrl-C to quit)\n"
            sys.stdout.write(text)
            sys.stdout.flush()
            if once:
                return
            await asyncio.sleep(max(0.0, interval - (loop.time() - started)))


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m liveview", description="The lastseen suite at a glance, live."
    )
    parser.add_argument("--once", action="store_true", help="print one snapshot and exit")
    parser.add_argument("--json", action="store_true", help="print snapshots as JSON lines")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    parser.add_argument(
        "--env-file", action="append", help="read settings from this file (repeatable; .env)"
    )
    parser.add_argument("--producer", help="producer base URL (default: CALLBACK_ENDPOINT)")
    parser.add_argument(
        "--consumer", action="append", help="a consumer's metrics base URL (repeatable)"
    )
    parser.add_argument("--rabbitmq", help="management API base URL (AMQP_URI host, :15672)")
    parser.add_argument("--dsn", help="PostgreSQL URL (default: from POSTGRES_*, TLS included)")
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = parser()
    args = arguments.parse_args(argv)
    if not 0.1 <= args.interval <= 3600:
        arguments.error("--interval must be between 0.1 and 3600 seconds")
    try:
        config = load_config(
            args.env_file,
            producer=args.producer,
            consumers=args.consumer,
            rabbitmq=args.rabbitmq,
            dsn=args.dsn,
        )
    except ConfigurationError as error:
        sys.stderr.write(f"liveview: configuration error: {error}\n")
        return 2
    try:
        asyncio.run(run(config, once=args.once, as_json=args.json, interval=args.interval))
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        # the reader went away (`python -m liveview --json | head -1`): not an error
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stops the interpreter's flush
    return 0


if __name__ == "__main__":
    sys.exit(main())
