"""``PUBLISH_MODE``: which :class:`producer.confirms.ConfirmedPublisher` a channel gets.

* ``pipeline`` (the default, the fast path): :mod:`producer.pipeline` batches the messages of one
  event-loop pass into one frame write and reads the broker-blocked flag. It is the only module
  that touches aiormq's and pamqp's internals, and it is imported only in this mode; its libraries
  (:data:`FAST_PATH`) are checked at start-up.
* ``standard``: :mod:`producer.standard`, aio-pika's public API only.
"""

from __future__ import annotations

from aio_pika.abc import AbstractChannel

from common.versions import FastPath
from producer.confirms import ConfirmedPublisher, PublishMode
from producer.standard import StandardPublisher

FAST_PATH = FastPath(("aiormq", "pamqp"), "PUBLISH_MODE=standard")
"""The pipeline and its broker-blocked flag use aiormq's channel internals and pamqp's frames."""


def fast_paths(mode: PublishMode) -> tuple[FastPath, ...]:
    """The library internals ``mode`` relies on; the standard mode runs on any version."""
    return (FAST_PATH,) if mode is PublishMode.PIPELINE else ()


async def open_confirmed_publisher(
    mode: PublishMode, channel: AbstractChannel, queue_name: str
) -> ConfirmedPublisher:
    """The ``mode`` implementation on ``channel`` (opened with ``publisher_confirms=True``)."""
    if mode is PublishMode.STANDARD:
        return StandardPublisher(channel, queue_name)
    # Imported here, not at the top: on an untested aiormq the pipeline's imports may fail, and the
    # standard mode is what an operator falls back to then.
    from producer.pipeline import PipelinePublisher

    return await PipelinePublisher.open(channel, queue_name)
