"""A steady publisher for fault tests: consecutive ids (even ones online for the scripted status
API) at a fixed rate, until stopped; it remembers every id it published."""

from __future__ import annotations

import asyncio
import contextlib
import time

import aio_pika

from tests.support.consumer_status import publish
from tests.support.waiting import eventually


class SteadyLoad:
    """Publishes consecutive ids at a steady rate until stopped; remembers what it published."""

    def __init__(
        self,
        channel: aio_pika.abc.AbstractChannel,
        queue: str,
        *,
        messages_per_second: float,
        ids_per_message: int = 20,
    ) -> None:
        self.channel = channel
        self.queue = queue
        self.interval = 1 / messages_per_second
        self.ids_per_message = ids_per_message
        self.published: list[int] = []
        self._next = 1
        self._stop = asyncio.Event()

    async def run(self) -> None:
        due = time.monotonic()
        while not self._stop.is_set():
            ids = list(range(self._next, self._next + self.ids_per_message))
            await publish(self.channel, self.queue, ids, callback_id=f"cb{self._next}")
            self.published += ids
            self._next += self.ids_per_message
            due += self.interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), max(0.0, due - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()

    async def grown_by(self, count: int, timeout: float = 10.0) -> None:
        target = len(self.published) + count
        await eventually(
            lambda: len(self.published) >= target, timeout=timeout, what=f"{count} more ids"
        )
