"""Confirmed publishing behind one small interface, :class:`ConfirmedPublisher`, in two versions.

``PUBLISH_MODE`` picks the implementation:

* ``pipeline`` (the default, the fast path): :mod:`producer.pipeline` batches the messages of one
  event-loop pass into one frame write and reads the broker-blocked flag. It is the only module
  that touches aiormq's channel internals and its private Connection.Blocked event, and it is
  imported only in this mode; its libraries (``FAST_PATH``) are checked at start-up.
* ``standard``: :class:`StandardPublisher` below, aio-pika's public API only — one
  ``exchange.publish`` per message on a confirm-mode channel. Roughly half the confirmed
  messages/s of the pipeline (see docs/producer.md), but no library internals: the fallback for
  an aiormq or pamqp version the pipeline was not tested with. Neither aio-pika nor aiormq has a
  public broker-blocked flag (aiormq's ``Connection.ready()`` only waits), so here ``blocked``
  is always false: a memory or disk alarm shows as confirm timeouts, which degrade the publisher
  (callbacks spool) exactly like a stalled network path.

Both report their outcome the same way, through :func:`settle`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import aio_pika
from aio_pika.abc import AbstractChannel
from pamqp import commands as spec

from common.messages import CONTENT_TYPE, OutgoingMessage
from common.versions import FastPath

FAST_PATH = FastPath(("aiormq", "pamqp"), "PUBLISH_MODE=standard")
"""The pipeline and its broker-blocked flag use aiormq's channel internals and pamqp's frames."""


class PublishMode(StrEnum):
    PIPELINE = "pipeline"
    STANDARD = "standard"


@dataclass(frozen=True, slots=True)
class Unconfirmed:
    """What a publish left unconfirmed (empty: all confirmed), and why."""

    messages: list[OutgoingMessage]
    reasons: frozenset[str] = frozenset()
    queue_missing: bool = False
    """A message came back as a Return: the work queue is gone, reconnecting re-declares it."""


class ConfirmedPublisher(Protocol):
    """Persistent, mandatory publishing to one queue on one confirm-mode channel."""

    @property
    def blocked(self) -> bool:
        """The broker sent Connection.Blocked (a resource alarm): publishes would stall."""
        ...

    async def publish(
        self, messages: Sequence[OutgoingMessage], confirm_timeout: float
    ) -> Unconfirmed:
        """Publish ``messages``; wait at most ``confirm_timeout`` s for the confirms."""
        ...

    def close(self) -> None:
        """Give up on whatever is not written yet; the channel itself is closed by its owner."""
        ...


async def open_publisher(
    mode: PublishMode, channel: AbstractChannel, queue_name: str
) -> ConfirmedPublisher:
    """The ``mode`` implementation on ``channel`` (opened with ``publisher_confirms=True``)."""
    if mode is PublishMode.STANDARD:
        return StandardPublisher(channel, queue_name)
    # Imported here, not at the top: on an untested aiormq the pipeline's imports may fail, and the
    # standard mode is what an operator falls back to then.
    from producer.pipeline import PipelinePublisher

    return await PipelinePublisher.open(channel, queue_name)


async def settle(
    messages: Sequence[OutgoingMessage],
    answers: Sequence[asyncio.Future[object]],
    confirm_timeout: float,
    queue_name: str,
) -> Unconfirmed:
    """Wait up to ``confirm_timeout`` s for the answer to each message (``answers[i]``).

    An answer is confirmed when it resolves to Basic.Ack; a Basic.Return resolves it to the
    returned message, a nack or a closed channel fails or cancels it. Answers still pending at the
    deadline are cancelled, which drops a message that was not written yet.
    """
    if not answers:
        return Unconfirmed([])
    await _all_done(answers, confirm_timeout)
    failed: list[OutgoingMessage] = []
    reasons: set[str] = set()
    returned = False
    for message, answer in zip(messages, answers, strict=True):
        if not answer.done():
            answer.cancel()
            reasons.add("confirm timeout")
        elif answer.cancelled():
            reasons.add("cancelled: channel closed")
        elif (error := answer.exception()) is not None:
            reasons.add(repr(error))
        elif isinstance(answer.result(), spec.Basic.Ack):
            continue
        else:
            returned = True
            reasons.add(f"returned unroutable: no queue {queue_name!r}")
        failed.append(message)
    return Unconfirmed(failed, frozenset(reasons), queue_missing=returned)


async def _all_done(answers: Sequence[asyncio.Future[object]], seconds: float) -> None:
    """Return once every answer is done, or after ``seconds``.

    ``asyncio.wait(answers, timeout=…)`` does the same at 2.6 µs more per call (a set of the
    answers, a ``get_running_loop()`` that is a ``getpid()`` system call on Python 3.11); it ran
    once per callback.
    """
    pending = [answer for answer in answers if not answer.done()]
    if not pending:
        return
    loop = pending[0].get_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    left = len(pending)

    def one_done(_: asyncio.Future[object]) -> None:
        nonlocal left
        left -= 1
        if not left:
            _release(waiter)

    for answer in pending:
        answer.add_done_callback(one_done)
    deadline = loop.call_later(seconds, _release, waiter)
    try:
        await waiter
    finally:
        deadline.cancel()
        for answer in pending:
            answer.remove_done_callback(one_done)


def _release(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class StandardPublisher:
    """:class:`ConfirmedPublisher` on aio-pika's public API: one confirmed publish per message."""

    def __init__(self, channel: AbstractChannel, queue_name: str) -> None:
        self._exchange = channel.default_exchange
        self._queue_name = queue_name
        self._in_flight: set[asyncio.Task[object]] = set()

    @property
    def blocked(self) -> bool:
        return False  # no public flag: an alarm surfaces as confirm timeouts (module docstring)

    async def publish(
        self, messages: Sequence[OutgoingMessage], confirm_timeout: float
    ) -> Unconfirmed:
        answers = [asyncio.ensure_future(self._publish_one(message)) for message in messages]
        self._in_flight.update(answers)
        for answer in answers:
            answer.add_done_callback(self._in_flight.discard)
        return await settle(messages, answers, confirm_timeout, self._queue_name)

    async def _publish_one(self, message: OutgoingMessage) -> object:
        # Mandatory, so that a missing queue is a Return (a failure), not a silent drop that the
        # broker would still confirm; the channel answers a Return with the returned message.
        return await self._exchange.publish(
            aio_pika.Message(
                message.body,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                content_type=CONTENT_TYPE,
                message_id=message.message_id,
            ),
            routing_key=self._queue_name,
            mandatory=True,
        )

    def close(self) -> None:
        for answer in self._in_flight:
            answer.cancel()
