"""What the consumer needs of a broker, whichever it is (RabbitMQ or Pub/Sub).

The worker and the service see three small things and nothing of the broker behind them:

* a :class:`Message` to work on: its body and id, and ``ack`` / ``nack(requeue=...)``;
* a :class:`HandOff`: ``retry(work, plan)`` puts a work message (the failed ids, one attempt
  further) back after the plan's delay, ``dead_letter(letter)`` parks a :class:`Letter`; each
  returns once the broker confirmed, or raises :class:`HandOffFailed` (the worker then gives the
  original message back whole);
* a :class:`Subscription` feeding an :class:`Intake` (the worker): ``supervise(stop)`` runs until
  ``stop`` is set (and raises what ends the subscription), ``cancel()`` stops deliveries while
  what was delivered can still be acked, ``connected()`` is the readiness probe's "broker".

A :class:`ConsumerBroker` opens the subscription and owns the hand-off. The two implementations
sit side by side: :mod:`consumer.rabbitmq` (quorum queues, delay queues per backoff tier) and
:mod:`consumer.pubsub` (streaming pull, the consumer's own delay). ``consumer.service`` picks one,
once, from ``BROKER``; nothing else asks which broker runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from common.messages import IdsMessage
from consumer.backoff import RetryPlan
from consumer.stats import WorkerStats


class HandOffFailed(Exception):
    """The broker did not confirm a retry or a dead letter: nothing was handed off."""


@dataclass(frozen=True, slots=True)
class Letter:
    """A dead letter: a body as it would be replayed, and what happened in its headers
    (:mod:`consumer.dead_letter`). Pub/Sub carries the headers as string attributes."""

    body: bytes
    headers: Mapping[str, str | int]


class Message(Protocol):
    """What the worker needs of a work message."""

    @property
    def body(self) -> bytes: ...

    @property
    def message_id(self) -> str | None: ...

    async def ack(self) -> None: ...

    async def nack(self, *, requeue: bool) -> None: ...


class HandOff(Protocol):
    async def retry(self, work: IdsMessage, plan: RetryPlan) -> None:
        """Bring ``work`` back to the consumers after ``plan``'s delay (``expiration_ms``)."""
        ...

    async def dead_letter(self, letter: Letter) -> None: ...


class Intake(Protocol):
    """What a subscription feeds and watches (the worker)."""

    async def on_message(self, message: Message) -> None: ...

    @property
    def paused(self) -> bool: ...

    @property
    def unsettled(self) -> int: ...

    @property
    def stats(self) -> WorkerStats: ...


class Subscription(Protocol):
    async def supervise(self, stop: asyncio.Event) -> None: ...

    async def cancel(self) -> None: ...


class ConsumerBroker(Protocol):
    """One broker's side of the consumer, open for the consumer's lifetime."""

    @property
    def hand_off(self) -> HandOff: ...

    @property
    def label(self) -> str:
        """Where the consumer is connected, for the start-up log (no secrets)."""
        ...

    def connected(self) -> bool: ...

    async def subscribe(self, intake: Intake) -> Subscription:
        """A subscription that is delivering to ``intake``."""
        ...
