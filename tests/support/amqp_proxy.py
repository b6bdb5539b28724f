"""A proxy in front of RabbitMQ that can speak for the broker: it forwards the broker's bytes to
the client in whole AMQP frames only, so a frame of the test's own can be slipped in between two of
the broker's. For what a test cannot make the shared broker send to one client alone, such as
Connection.Blocked (a real resource alarm would block every other test)."""

from __future__ import annotations

import asyncio
import contextlib
import struct

import pamqp.frame
from pamqp.base import Frame

from tests.support.proxy import TcpProxy

_HEADER = 7  # frame type (1 byte), channel (2), payload size (4); the payload; then 0xCE
_FRAME_END = 1


def whole_frames(buffer: bytes) -> int:
    """How many leading bytes of ``buffer`` are complete AMQP frames."""
    end = 0
    while len(buffer) - end >= _HEADER:
        (size,) = struct.unpack_from(">I", buffer, end + 3)
        frame_end = end + _HEADER + size + _FRAME_END
        if frame_end > len(buffer):
            break
        end = frame_end
    return end


class AmqpFrameProxy(TcpProxy):
    def send_to_clients(self, method: Frame) -> None:
        """Send ``method`` (on channel 0) to every client as if the broker had sent it."""
        self._call(self._send_to_clients(pamqp.frame.marshal(method, 0)))

    async def _send_to_clients(self, frame: bytes) -> None:
        for client, _ in self._pairs:
            # Safe at any moment: the client's stream only ever received whole frames.
            client.write(frame)

    async def _pipe_to_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        pending = b""
        with contextlib.suppress(OSError, ConnectionError):
            while data := await reader.read(65536):
                pending += data
                whole = whole_frames(pending)
                if not whole:
                    continue
                await self._flowing.wait()
                writer.write(pending[:whole])
                pending = pending[whole:]
                await writer.drain()
        with contextlib.suppress(OSError, RuntimeError):
            writer.close()
