"""A fast stand-in for the tester's status API, for the consumer benchmark.

``GET /objects/{id}`` answers ``{"id": N, "online": N is even}`` after a delay spread uniformly
over ``[--delay-min, --delay-max]`` (the tester's real distribution is 0.3-4.3 s). The delay is a
function of the id (:func:`status_delay`), so a benchmark knows each id's delay without asking:
the pipeline overhead of a stored row is its end-to-end time minus exactly this. ``GET /stats``
gives the number of requests served and the peak number in flight. It uses aiohttp's low-level
server (no router) so that it costs the shared machine as little CPU as possible.

    python -m bench.consumer_status_server --port 0 --delay-min 0.3 --delay-max 4.3
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import orjson
import uvloop
from aiohttp import web


def status_delay(object_id: int, delay_min: float, delay_max: float) -> float:
    """The answer delay of ``object_id``: Knuth's multiplicative hash spreads consecutive ids
    uniformly over ``[delay_min, delay_max]``."""
    spread = (object_id * 2654435761) % 2**32 / 2**32
    return delay_min + (delay_max - delay_min) * spread


class StatusServer:
    def __init__(self, delay_min: float, delay_max: float) -> None:
        self.delay_min = delay_min
        self.delay_max = delay_max
        self.in_flight = 0
        self.peak = 0
        self.served = 0

    async def handle(self, request: web.BaseRequest) -> web.Response:
        path = request.path
        if path == "/stats":
            return web.Response(
                body=orjson.dumps(
                    {"served": self.served, "in_flight": self.in_flight, "peak": self.peak}
                ),
                content_type="application/json",
            )
        if not path.startswith("/objects/"):
            return web.Response(status=404)
        try:
            object_id = int(path[9:])
        except ValueError:
            return web.Response(status=400, text="invalid id")
        self.in_flight += 1
        if self.in_flight > self.peak:
            self.peak = self.in_flight
        try:
            await asyncio.sleep(status_delay(object_id, self.delay_min, self.delay_max))
        finally:
            self.in_flight -= 1
        self.served += 1
        return web.Response(
            body=b'{"id":%d,"online":%s}' % (object_id, b"false" if object_id % 2 else b"true"),
            content_type="application/json",
        )


async def serve(port: int, delay_min: float, delay_max: float) -> None:
    server = web.Server(StatusServer(delay_min, delay_max).handle, access_log=None)
    runner = web.ServerRunner(server, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=8192)
    await site.start()
    bound = runner.addresses[0][1]
    sys.stdout.write(f"listening http://127.0.0.1:{bound}\n")
    sys.stdout.flush()
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay-min", type=float, default=0.3)
    parser.add_argument("--delay-max", type=float, default=4.3)
    args = parser.parse_args()
    uvloop.run(serve(args.port, args.delay_min, args.delay_max))


if __name__ == "__main__":
    main()
