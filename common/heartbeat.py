"""A file touched by the event loop, so a container health check can tell a live loop from a
stuck one without the service growing an HTTP port just for that."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

# A timestamp, no data: on the container's own /tmp tmpfs nothing can be learnt or planted there.
DEFAULT_PATH = Path("/tmp/lastseen.heartbeat")  # noqa: S108 - container tmpfs, a timestamp only


async def beat_forever(path: Path = DEFAULT_PATH, interval: float = 5.0) -> None:
    """Touch ``path`` every ``interval`` seconds until cancelled."""
    while True:
        path.touch()  # noqa: ASYNC240 - a tmpfs touch is microseconds, not worth a thread
        await asyncio.sleep(interval)


def is_fresh(path: Path = DEFAULT_PATH, max_age: float = 30.0) -> bool:
    try:
        return time.time() - path.stat().st_mtime <= max_age
    except FileNotFoundError:
        return False
