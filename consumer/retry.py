"""The retry message: failed ids of a work message, one attempt further, for a delay queue."""

from __future__ import annotations

import aio_pika

from common.messages import CONTENT_TYPE, IdsMessage


def retry_message(work: IdsMessage, ids: list[int], expiration_ms: int) -> aio_pika.Message:
    """The failed ``ids`` of ``work`` with one more attempt counted, to wait in a delay queue."""
    body = IdsMessage(work.callback_id, work.received_at, ids, work.attempt + 1).encode()
    return aio_pika.Message(
        body,
        content_type=CONTENT_TYPE,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        expiration=expiration_ms / 1000,
    )
