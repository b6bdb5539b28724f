"""The confirm pipeline's hand-packed publish frames against pamqp's marshalling of the same
frames, byte for byte (the frames aiormq's own ``basic_publish`` would send)."""

from __future__ import annotations

import pamqp.frame
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from common.messages import CONTENT_TYPE, OutgoingMessage
from producer.pipeline import PublishFrames

pytestmark = pytest.mark.unit


def pamqp_frames(channel: int, queue: str, max_size: int, message: OutgoingMessage) -> bytes:
    body = message.body
    frames: list[spec.Basic.Publish | ContentHeader | ContentBody] = [
        spec.Basic.Publish(exchange="", routing_key=queue, mandatory=True),
        ContentHeader(
            properties=spec.Basic.Properties(
                delivery_mode=2, content_type=CONTENT_TYPE, message_id=message.message_id
            ),
            body_size=len(body),
        ),
    ]
    if len(body) <= max_size:
        frames.append(ContentBody(body))
    else:
        frames.extend(ContentBody(body[i : i + max_size]) for i in range(0, len(body), max_size))
    return b"".join(pamqp.frame.marshal(frame, channel) for frame in frames)


def packed(channel: int, queue: str, max_size: int, message: OutgoingMessage) -> bytes:
    out: list[bytes] = []
    PublishFrames(channel, queue, max_size).append(out, message)
    return b"".join(out)


@given(
    channel=st.integers(1, 65535),
    queue=st.text(st.characters(codec="utf-8"), max_size=80).filter(
        lambda q: len(q.encode()) <= 255
    ),
    message_id=st.text(st.characters(codec="utf-8"), max_size=60).filter(
        lambda m: len(m.encode()) <= 255
    ),
    body=st.binary(max_size=3000),
    max_size=st.sampled_from([1, 100, 1024, 131064]),
)
def test_same_bytes_as_pamqp(
    channel: int, queue: str, message_id: str, body: bytes, max_size: int
) -> None:
    message = OutgoingMessage(message_id, body)
    assert packed(channel, queue, max_size, message) == pamqp_frames(
        channel, queue, max_size, message
    )


def test_a_callback_message_as_the_producer_sends_it() -> None:
    message = OutgoingMessage("0f" * 16 + ".0", b'{"v":1,"ids":[1,2,3]}' * 100)
    assert packed(1, "bitburst", 131064, message) == pamqp_frames(1, "bitburst", 131064, message)
    assert packed(7, "bitburst", 512, message) == pamqp_frames(7, "bitburst", 512, message)


def test_a_message_id_too_long_for_a_short_string_is_refused() -> None:
    with pytest.raises(ValueError, match="short string"):
        packed(1, "q", 1024, OutgoingMessage("x" * 256, b"{}"))
