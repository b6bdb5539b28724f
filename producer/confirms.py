"""Confirmed publishing: the small interface every ``PUBLISH_MODE`` implements, and how each reports
its outcome (:func:`settle`).

The implementations live beside it and import only this module: :mod:`producer.standard`
(aio-pika's public API) and :mod:`producer.pipeline` (the fast path on aiormq's internals).
:mod:`producer.publish_modes` picks one from ``PUBLISH_MODE``; nothing here imports either, so
there is no import loop and an untested aiormq cannot break this module.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from pamqp import commands as spec

from common.messages import OutgoingMessage


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
