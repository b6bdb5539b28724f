"""``python -m consumer`` (consume) and ``python -m consumer replay-dead [--limit N]``."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import structlog
import uvloop

from common.log import configure_logging
from common.retrying import DependencyUnavailable
from common.settings import load_settings
from consumer.replay import ReplaySettings, replay_dead
from consumer.service import run_consumer, tune_gc
from consumer.settings import ConsumerSettings

log = structlog.get_logger("consumer")


async def consume(settings: ConsumerSettings) -> None:
    tune_gc()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await run_consumer(settings, stop)


def run(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m consumer")
    commands = parser.add_subparsers(dest="command")
    replay = commands.add_parser("replay-dead", help="move dead letters back to the work queue")
    replay.add_argument("--limit", type=int, default=None, help="move at most N dead letters")
    args = parser.parse_args(argv)
    if args.command == "replay-dead":
        if args.limit is not None and args.limit < 1:
            parser.error("--limit must be at least 1")
        replay_settings = load_settings(ReplaySettings, "consumer")
        configure_logging("consumer", replay_settings.log_level, replay_settings.log_format)
        _run_or_exit(replay_dead(replay_settings, args.limit))
        return
    settings = load_settings(ConsumerSettings, "consumer")
    configure_logging("consumer", settings.log_level, settings.log_format)
    _run_or_exit(consume(settings))


def _run_or_exit(main: object) -> None:
    try:
        uvloop.run(main)  # type: ignore[arg-type]
    except DependencyUnavailable as error:
        log.error("dependency_unavailable", error=str(error))
        sys.exit(1)


if __name__ == "__main__":
    run()
