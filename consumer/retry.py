"""RabbitMQ's retry message: a work message of failed ids, to wait in a delay queue."""

from __future__ import annotations

import aio_pika

from common.messages import CONTENT_TYPE, IdsMessage


def retry_message(retry: IdsMessage, expiration_ms: int) -> aio_pika.Message:
    """``retry`` (the failed ids, one more attempt counted) to wait ``expiration_ms`` in a delay
    queue."""
    return aio_pika.Message(
        retry.encode(),
        content_type=CONTENT_TYPE,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        expiration=expiration_ms / 1000,
    )
