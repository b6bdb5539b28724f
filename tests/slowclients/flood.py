"""A misbehaving client: holds as many connections to a server as it is told, for a while.

``python -m tests.slowclients.flood --port P --mode MODE --connections N --seconds S`` keeps N
connections open, each behaving as MODE says; a connection the server closes is opened again
after a pause, as an attacker's script would. At the end it prints one JSON line of counts and
exits, and the kernel closes whatever it still held.

Modes (issue 23): ``silent`` sends nothing after connecting; ``head`` trickles a request head a
byte at a time; ``body`` sends a whole head and trickles its body; ``idle`` sends one request,
reads the answer and keeps the connection idle.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import signal
import sys
from collections import Counter
from collections.abc import Awaitable, Callable

HEAD = b"POST /callback HTTP/1.1\r\nhost: producer\r\ncontent-type: application/json\r\n"
BODY_HEAD = HEAD + b"content-length: 100000\r\n\r\n"
HEALTH = b"GET /health HTTP/1.1\r\nhost: producer\r\n\r\n"

# Each behaviour returns what the server sent before it closed the connection.
Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter, float], Awaitable[bytes]]
REQUEST_TIMEOUT = b"HTTP/1.1 408 "


async def silent(reader: asyncio.StreamReader, _: asyncio.StreamWriter, __: float) -> bytes:
    received = b""
    while data := await reader.read(4096):
        received += data
    return received


async def trickle(
    data: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pause: float
) -> bytes:
    for index in range(len(data)):
        writer.write(data[index : index + 1])
        await writer.drain()
        try:
            # The server's answer (a 408) or its close ends the wait for the next byte.
            received = await asyncio.wait_for(reader.read(4096), timeout=pause)
        except TimeoutError:
            continue
        return received + await silent(reader, writer, pause) if received else received
    return await silent(reader, writer, pause)


async def head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pause: float) -> bytes:
    return await trickle(HEAD, reader, writer, pause)


async def body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pause: float) -> bytes:
    writer.write(BODY_HEAD)
    return await trickle(b'{"object_ids":[' + b"1," * 50_000, reader, writer, pause)


async def idle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pause: float) -> bytes:
    writer.write(HEALTH)
    await writer.drain()
    await reader.readuntil(b"\r\n\r\n")
    return await silent(reader, writer, pause)


MODES: dict[str, Behaviour] = {"silent": silent, "head": head, "body": body, "idle": idle}


async def hold(port: int, behave: Behaviour, pause: float, counts: Counter[str]) -> None:
    while True:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            counts["connect_failed"] += 1
            await asyncio.sleep(pause)
            continue
        counts["opened"] += 1
        try:
            received = await behave(reader, writer, pause)
        except (OSError, asyncio.IncompleteReadError):
            received = b""
        counts["closed_by_server"] += 1
        counts["answered_408"] += received.startswith(REQUEST_TIMEOUT)
        writer.close()
        await asyncio.sleep(pause)


async def flood(
    port: int, mode: str, connections: int, seconds: float, pause: float
) -> Counter[str]:
    """Hold the connections until SIGTERM, or ``seconds`` at most."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    counts: Counter[str] = Counter()
    holders = [
        asyncio.create_task(hold(port, MODES[mode], pause, counts)) for _ in range(connections)
    ]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    for holder in holders:
        holder.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*holders, return_exceptions=True)
    return counts


def raise_open_file_limit(wanted: int) -> None:
    """An ordinary soft limit (often 1,024) is below what a flood holds; the hard one rarely is."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=sorted(MODES), required=True)
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--pause", type=float, default=1.0, help="between bytes and reconnects")
    args = parser.parse_args()
    raise_open_file_limit(args.connections + 64)
    counts = asyncio.run(flood(args.port, args.mode, args.connections, args.seconds, args.pause))
    sys.stdout.write(json.dumps({"mode": args.mode, **counts}) + "\n")


if __name__ == "__main__":
    main()
