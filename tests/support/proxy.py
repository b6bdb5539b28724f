"""A TCP proxy between a service and its broker or database, for outage tests.

It runs its own event loop in a thread, so it works the same for in-process async code and for
services started as separate processes. ``cut()`` drops every connection and refuses new ones (a
crash or a network cut); ``blackhole()`` keeps connections open but forwards nothing (a hang
without a reset); ``restore()`` goes back to forwarding. ``shape(link)`` makes the path slow, lossy
or narrow (:mod:`tests.support.link_shaper`) on open connections and new ones, until
``shape(None)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
from typing import Literal

from tests.support.link_shaper import Link, LinkClock
from tests.support.ports import free_port

Mode = Literal["forward", "cut", "blackhole"]


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.mode: Mode = "forward"
        self.port = free_port()
        self.connections_made = 0
        self.link: Link | None = None
        self.retransmissions = 0  # chunks a shaped link delivered late for a 'lost' segment
        self._rng = random.Random(target_port)
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._flowing: asyncio.Event
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="proxy")

    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def stop(self) -> None:
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def cut(self) -> None:
        """Reset every open connection and refuse new ones until :meth:`restore`."""
        self._call(self._cut())

    def blackhole(self) -> None:
        """Keep connections (and accept new ones) but deliver no byte until :meth:`restore`."""
        self._call(self._set_mode("blackhole"))

    def restore(self) -> None:
        self._call(self._restore())

    def shape(self, link: Link | None, *, seed: int | None = None) -> None:
        """Send every chunk, both ways, over ``link`` from now on; ``None``: at full speed again
        (chunks already delayed still arrive in order). ``seed`` makes the draws repeatable."""

        async def set_link() -> None:
            if seed is not None:
                self._rng.seed(seed)
            self.link = link

        self._call(set_link())

    @property
    def open_connections(self) -> int:
        return len(self._pairs)

    def _call(self, coroutine: object) -> None:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)  # type: ignore[arg-type]
        future.result(timeout=10)

    async def _set_mode(self, mode: Mode) -> None:
        self.mode = mode
        if mode == "blackhole":
            self._flowing.clear()
        else:
            self._flowing.set()

    async def _listen(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _shutdown(self) -> None:
        await self._cut()
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    async def _cut(self) -> None:
        await self._set_mode("cut")
        if self._server is not None:
            self._server.close()
            self._server = None
        for pair in list(self._pairs):
            for writer in pair:
                _reset(writer)
        self._pairs.clear()

    async def _restore(self) -> None:
        await self._set_mode("forward")
        if self._server is None:
            self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self.mode == "cut":
            _reset(client_w)
            return
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            _reset(client_w)
            return
        self.connections_made += 1
        pair = (client_w, server_w)
        self._pairs.add(pair)
        try:
            await asyncio.gather(
                self._pipe(client_r, server_w), self._pipe_to_client(server_r, client_w)
            )
        finally:
            self._pairs.discard(pair)
            for writer in pair:
                writer.close()

    async def _pipe_to_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await self._pipe(reader, writer)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        shaped = _ShapedWriter(writer, self._rng, self)
        try:
            with contextlib.suppress(OSError, ConnectionError):
                while not shaped.broken:
                    data = await reader.read(65536)
                    if not data:
                        break
                    # While black-holed, bytes are held, not dropped: like a stalled network path,
                    # the stream resumes intact on restore (unless a peer gave up and reset).
                    await self._flowing.wait()
                    if self.link is None and shaped.idle:
                        writer.write(data)
                        await writer.drain()
                    else:
                        await shaped.put(data, self.link)
                await shaped.drained()
        finally:
            shaped.cancel()
        with contextlib.suppress(OSError, RuntimeError):
            writer.close()


class _ShapedWriter:
    """One direction of a connection over a :class:`Link`: chunks wait in order for their
    delivery time. The queue is bounded, like an interface's: a full one stops the reading, so a
    bandwidth cap pushes back on the sender instead of buffering without end."""

    def __init__(self, writer: asyncio.StreamWriter, rng: random.Random, counts: TcpProxy) -> None:
        self._writer = writer
        self._rng = rng
        self._counts = counts
        self._queue: asyncio.Queue[tuple[bytes, float]] = asyncio.Queue(maxsize=64)
        self._clock: LinkClock | None = None
        self._task: asyncio.Task[None] | None = None
        self._in_hand = 0  # chunks queued or being written
        self.broken = False

    @property
    def idle(self) -> bool:
        return self._in_hand == 0

    async def put(self, data: bytes, link: Link | None) -> None:
        loop = asyncio.get_running_loop()
        if link is None:
            deliver_at = loop.time()  # behind what is queued: order is kept
        else:
            if self._clock is None or self._clock.link != link:
                self._clock = LinkClock(link, self._rng)
            before = self._clock.retransmissions
            deliver_at = self._clock.delivery_time(loop.time(), len(data))
            self._counts.retransmissions += self._clock.retransmissions - before
        if self._task is None:
            self._task = asyncio.create_task(self._deliver(), name="proxy-shaped")
        self._in_hand += 1
        await self._queue.put((data, deliver_at))

    async def drained(self) -> None:
        """Every queued chunk delivered (or the peer gone)."""
        if self._task is not None and not self.broken:
            await self._queue.join()

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _deliver(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data, deliver_at = await self._queue.get()
            try:
                if not self.broken:
                    await asyncio.sleep(max(0.0, deliver_at - loop.time()))
                    self._writer.write(data)
                    await self._writer.drain()
            except (OSError, ConnectionError, RuntimeError):
                self.broken = True  # the peer is gone: what is still queued is dropped
            finally:
                self._in_hand -= 1
                self._queue.task_done()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST rather than FIN, like a crashed peer or a cut cable."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()
