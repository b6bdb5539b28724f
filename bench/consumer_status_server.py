"""A cheap stand-in for the tester's status API, for the consumer benchmark.

``GET /objects/{id}`` answers ``{"id": N, "online": N is even}`` after a delay spread uniformly
over ``[--delay-min, --delay-max]`` (the tester's real distribution is 0.3-4.3 s). The delay is a
function of the id (:func:`status_delay`), so a benchmark knows each id's delay without asking:
the pipeline overhead of a stored row is its end-to-end time minus exactly this. ``GET /stats``
gives the number of requests served and the peak number in flight.

It must not be the bottleneck of the measurement on a shared two-core machine, so it is a plain
``asyncio.Protocol`` on uvloop: no request object, no coroutine and no task per request, the
answer written by a timer (``loop.call_later``). It speaks just enough HTTP/1.1 for keep-alive
clients that send bodiless GETs one at a time (a second request on a connection waits for the
first answer, so answers stay in order); anything else gets ``400`` and the connection closes.
The aiohttp server it replaced cost 0.19-0.26 ms of CPU per id, more than the consumer it served
(see ``docs/benchmarks/NOTES.md``).

    python -m bench.consumer_status_server --port 0 --delay-min 0.3 --delay-max 4.3
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from collections import deque
from typing import cast

import orjson
import uvloop

MAX_HEAD = 8192


def status_delay(object_id: int, delay_min: float, delay_max: float) -> float:
    """The answer delay of ``object_id``: Knuth's multiplicative hash spreads consecutive ids
    uniformly over ``[delay_min, delay_max]``."""
    spread = (object_id * 2654435761) % 2**32 / 2**32
    return delay_min + (delay_max - delay_min) * spread


def _response(status: bytes, body: bytes, *, close: bool = False) -> bytes:
    connection = b"close" if close else b"keep-alive"
    return (
        b"HTTP/1.1 %b\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
        b"Connection: %b\r\n\r\n%b" % (status, len(body), connection, body)
    )


BAD_REQUEST = _response(b"400 Bad Request", b"bad request\n", close=True)
NOT_FOUND = _response(b"404 Not Found", b"not found\n")


class Counters:
    def __init__(self, delay_min: float, delay_max: float) -> None:
        self.delay_min = delay_min
        self.delay_max = delay_max
        self.in_flight = 0
        self.peak = 0
        self.served = 0

    def stats(self) -> dict[str, int]:
        return {"served": self.served, "in_flight": self.in_flight, "peak": self.peak}


class StatusProtocol(asyncio.Protocol):
    """One client connection: parse request heads, answer each after its id's delay."""

    def __init__(self, counters: Counters) -> None:
        self.counters = counters
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.waiting: deque[bytes] = deque()  # request targets behind the one being answered
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            line_end = buffer.find(b"\r\n")
            self.waiting.append(buffer[:line_end])
            buffer = buffer[end + 4 :]
        if len(buffer) > MAX_HEAD:
            self._write(BAD_REQUEST, close=True)
            return
        self.buffer = buffer
        if not self.busy:
            self._next()

    def _next(self) -> None:
        while self.waiting and self.transport is not None:
            parts = self.waiting.popleft().split(b" ")
            if len(parts) != 3 or parts[0] != b"GET" or not parts[2].startswith(b"HTTP/1."):
                self._write(BAD_REQUEST, close=True)
                return
            target = parts[1]
            if target == b"/stats":
                self._write(_response(b"200 OK", orjson.dumps(self.counters.stats())))
                continue
            if not target.startswith(b"/objects/"):
                self._write(NOT_FOUND)
                continue
            try:
                object_id = int(target[9:])
            except ValueError:
                self._write(BAD_REQUEST, close=True)
                return
            counters = self.counters
            counters.in_flight += 1
            if counters.in_flight > counters.peak:
                counters.peak = counters.in_flight
            self.busy = True
            delay = status_delay(object_id, counters.delay_min, counters.delay_max)
            self.loop.call_later(delay, self._answer, object_id)
            return
        self.busy = False

    def _answer(self, object_id: int) -> None:
        counters = self.counters
        counters.in_flight -= 1
        counters.served += 1
        online = b"false" if object_id % 2 else b"true"
        self._write(_response(b"200 OK", b'{"id":%d,"online":%b}' % (object_id, online)))
        self._next()

    def _write(self, payload: bytes, *, close: bool = False) -> None:
        transport = self.transport
        if transport is None:
            return
        transport.write(payload)
        if close:
            transport.close()
            self.transport = None


async def serve(port: int, delay_min: float, delay_max: float) -> None:
    counters = Counters(delay_min, delay_max)
    loop = asyncio.get_running_loop()
    sock = socket.create_server(("127.0.0.1", port), backlog=8192)
    server = await loop.create_server(lambda: StatusProtocol(counters), sock=sock)
    bound = sock.getsockname()[1]
    sys.stdout.write(f"listening http://127.0.0.1:{bound}\n")
    sys.stdout.flush()
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay-min", type=float, default=0.3)
    parser.add_argument("--delay-max", type=float, default=4.3)
    args = parser.parse_args()
    uvloop.run(serve(args.port, args.delay_min, args.delay_max))


if __name__ == "__main__":
    main()
