"""``python -m tester``: wiring only."""

from __future__ import annotations

import asyncio

from common.entrypoint import run_service
from tester.service import CannotListen, serve
from tester.settings import TesterSettings


async def main(settings: TesterSettings, stop: asyncio.Event) -> None:
    await serve(settings, stop)


def run() -> None:
    run_service("tester", TesterSettings, main, fatal={CannotListen: "cannot_listen"})


if __name__ == "__main__":
    run()
