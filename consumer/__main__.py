"""``python -m consumer`` (consume) and ``python -m consumer replay-dead [--limit N]``."""

from __future__ import annotations

import argparse
import asyncio

from common.entrypoint import run_service
from consumer.replay import ReplaySettings, replay_dead
from consumer.service import run_consumer, tune_gc
from consumer.settings import ConsumerSettings


async def consume(settings: ConsumerSettings, stop: asyncio.Event) -> None:
    tune_gc()
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

        async def replay_main(settings: ReplaySettings, stop: asyncio.Event) -> None:
            await replay_dead(settings, args.limit)

        run_service("consumer", ReplaySettings, replay_main)
    run_service("consumer", ConsumerSettings, consume)


if __name__ == "__main__":
    run()
