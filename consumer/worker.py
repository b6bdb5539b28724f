"""The id flow: work messages in, status lookups, rows to the batch writer, acks out.

Each received message becomes a :class:`~consumer.ledger.Delivery`; its ids are fed to lookups
while fewer than ``MAX_CONSUMERS`` are in flight (so the status API never sees more from this
process); lookups of an id already in flight join it (single-flight). An online answer goes to
the batch writer with the time it arrived; an offline one settles the id; a failure is kept until
the message's last lookup answers, then all its failures go, as one message, to the hand-off
(:class:`consumer.broker.HandOff`): a retry after a backoff delay, or (out of attempts) a dead
letter. The message is acked once every id is settled. The worker does not know which broker
runs: messages, the hand-off and their failure (:class:`~consumer.broker.HandOffFailed`) are the
broker's side of :mod:`consumer.broker`.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any

import structlog
from prometheus_client import CollectorRegistry
from structlog.contextvars import bind_contextvars, bound_contextvars

from common.amqp import SETTLE_ERRORS, cancelled_by_broker
from common.messages import IdsMessage, MalformedMessage, decode_message
from consumer.backoff import RetryPolicy
from consumer.batch_writer import RowSink
from consumer.broker import HandOff, HandOffFailed, Message
from consumer.dead_letter import exhausted_letter, malformed_letter
from consumer.ledger import Delivery, Next, exhausted, summarize
from consumer.metrics import ConsumerMetrics
from consumer.single_flight import Flights
from consumer.stats import WorkerStats
from consumer.status import StatusFailure, StatusLookup

log = structlog.get_logger(__name__)


__all__ = ["Message", "Worker"]


class Worker:
    """Looks up the ids of the messages it is given, at most ``max_in_flight`` at once, and
    settles each message: online rows go to ``rows`` (whose commits come back through
    :meth:`on_stored`), failures go to ``hand_off`` (a retry, or a dead letter), settled
    messages are acked."""

    def __init__(
        self,
        status: StatusLookup,
        rows: RowSink[Delivery[Message]],
        hand_off: HandOff,
        *,
        max_in_flight: int,
        retry: RetryPolicy,
        rng: random.Random | None = None,
        metrics: ConsumerMetrics | None = None,
    ) -> None:
        self._status = status
        self._rows = rows
        self._hand_off_to = hand_off
        self._max_in_flight = max_in_flight
        self._retry = retry
        self._rng = rng or random.Random()
        self.metrics = metrics or ConsumerMetrics(CollectorRegistry())
        # loop.create_task, not asyncio.create_task: the latter's get_running_loop() costs a
        # getpid() system call per lookup (Python 3.11).
        self._loop = asyncio.get_running_loop()
        self._waiting: deque[Delivery[Message]] = deque()
        self._flights: Flights[Delivery[Message]] = Flights()
        self._lookups: dict[int, asyncio.Task[None]] = {}
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._in_process: set[Delivery[Message]] = set()
        self._all_settled = asyncio.Event()
        self._all_settled.set()
        self._paused = False
        self.stats = WorkerStats()

    # --- messages in -------------------------------------------------------------------------

    async def on_message(self, message: Message) -> None:
        """The subscription's callback: never raises; a message is acked, dead-lettered or left
        unacked (to be redelivered), never requeued in a loop."""
        self.stats.messages += 1
        try:
            work = decode_message(message.body)
        except MalformedMessage as error:
            with bound_contextvars(message_id=message.message_id):
                await self._dead_letter_malformed(message, str(error))
            return
        delivery = Delivery(message, work)
        self.stats.ids += len(work.ids)
        self._in_process.add(delivery)
        self._all_settled.clear()
        if not work.ids:
            self._advance(delivery)
            return
        self._waiting.append(delivery)
        self._pump()

    def set_paused(self, paused: bool) -> None:
        """Stop (or resume) starting lookups, e.g. while the database is failing."""
        if paused != self._paused:
            log.warning("intake_paused" if paused else "intake_resumed")
        self._paused = paused
        if not paused:
            self._pump()

    def on_health(self, healthy: bool) -> None:
        """The batch writer's news: pause while the database cannot be written."""
        self.set_paused(not healthy)

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def unsettled(self) -> int:
        """Messages received and not yet acked, handed back or dead-lettered."""
        return len(self._in_process)

    @property
    def in_flight(self) -> int:
        return len(self._flights)

    def oldest_arrival(self) -> float | None:
        """Monotonic time the oldest unsettled message arrived (None: none is unsettled)."""
        return min((delivery.arrived for delivery in list(self._in_process)), default=None)

    def _pump(self) -> None:
        waiting, flights, lookups = self._waiting, self._flights, self._lookups
        limit, create_task = self._max_in_flight, self._loop.create_task
        while waiting and len(flights) < limit and not self._paused:
            delivery = waiting[0]
            ids = delivery.work.ids
            object_id = ids[delivery.next_index]
            delivery.next_index += 1
            if delivery.next_index == len(ids):
                waiting.popleft()
            if flights.join(object_id, delivery):
                lookups[object_id] = create_task(self._lookup(object_id))

    async def _lookup(self, object_id: int) -> None:
        reason: str | None = None
        online = False
        started = time.perf_counter()
        try:
            online = await self._status.lookup(object_id)
        except StatusFailure as failure:
            reason = failure.reason
        except asyncio.CancelledError:
            self._lookups.pop(object_id, None)
            raise
        except Exception as error:  # one id's boundary: a bug must not stall its messages
            log.exception("lookup_crashed", object_id=object_id)
            reason = f"internal error: {error!r}"
        seen = datetime.now(UTC)
        outcome = "failed" if reason is not None else "online" if online else "offline"
        self.metrics.looked_up(outcome, time.perf_counter() - started)
        del self._lookups[object_id]
        rows = self._rows
        for delivery in self._flights.land(object_id):
            if reason is not None:
                delivery.failed(object_id, reason)
            elif online:
                delivery.answered_online()
                rows.add(object_id, seen, delivery)
                continue  # settles on commit
            else:
                delivery.answered_offline()
            self._advance(delivery)
        self._pump()

    # --- settling ----------------------------------------------------------------------------

    def on_stored(self, owners: list[Delivery[Message]]) -> None:
        """The batch writer committed rows of these deliveries (one entry per row)."""
        self.metrics.stored([delivery.work.received_at for delivery in owners])
        for delivery in owners:
            delivery.stored()
            if not delivery.unstored:
                self._advance(delivery)

    def _advance(self, delivery: Delivery[Message]) -> None:
        step = delivery.next_step()
        if step is Next.ACK:
            self._spawn(self._ack(delivery), delivery)
        elif step is Next.HAND_OFF:
            self._spawn(self._hand_off(delivery), delivery)

    def _spawn(self, coroutine: Any, delivery: Delivery[Message]) -> None:
        """Settle ``delivery`` in a task of its own, its logs bound to the message (the task's
        context is a copy: the binding ends with it)."""
        context = contextvars.copy_context()
        context.run(
            bind_contextvars,
            callback_id=delivery.work.callback_id,
            message_id=delivery.token.message_id,
        )
        task = self._loop.create_task(coroutine, context=context)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    def _forget(self, delivery: Delivery[Message]) -> None:
        self._in_process.discard(delivery)
        if not self._in_process:
            self._all_settled.set()

    async def _ack(self, delivery: Delivery[Message]) -> None:
        self._forget(delivery)
        try:
            await delivery.token.ack()
            self.stats.acked += 1
        except SETTLE_ERRORS as error:
            if not cancelled_by_broker(error):
                raise
            # The channel it came on is gone (reconnect): the broker redelivers it, and the
            # redelivery is harmless (upserts only move forward).
            log.warning(
                "ack_failed",
                error=repr(error),
                outcome="will be redelivered",
            )

    async def _hand_off(self, delivery: Delivery[Message]) -> None:
        work, failures = delivery.work, delivery.failures
        try:
            if exhausted(work.attempt, self._retry.max_attempts):
                await self._hand_off_to.dead_letter(exhausted_letter(work, failures))
                self.stats.dead += len(failures)
                log.warning(
                    "ids_dead_lettered",
                    ids=len(failures),
                    attempts=work.attempt + 1,
                    reason=summarize(failures),
                )
            else:
                plan = self._retry.plan(work.attempt + 1, self._rng)
                retry = IdsMessage(
                    work.callback_id, work.received_at, sorted(failures), work.attempt + 1
                )
                await self._hand_off_to.retry(retry, plan)
                self.stats.retried += len(failures)
                log.info(
                    "ids_retry_scheduled",
                    ids=len(failures),
                    attempt=work.attempt + 1,
                    delay_ms=plan.expiration_ms,
                    reason=summarize(failures),
                )
        except HandOffFailed as error:
            # Not handed off, so not settled: give the message back whole. Its ids are looked up
            # again (the broker's delivery limit stops a message that always fails here).
            log.warning("hand_off_failed", error=repr(error))
            delivery.finished = True
            self._forget(delivery)
            await self._settle_token(delivery.token, requeue=True)
            return
        delivery.hand_off_done()
        self._advance(delivery)

    async def _dead_letter_malformed(self, message: Message, reason: str) -> None:
        try:
            await self._hand_off_to.dead_letter(malformed_letter(message.body, reason))
        except HandOffFailed as error:
            log.warning("dead_letter_failed", reason=reason, error=repr(error))
            await self._settle_token(message, requeue=True)
            return
        self.stats.dead += 1
        log.warning("message_dead_lettered", reason=reason)
        await self._settle_token(message, requeue=None)

    async def _settle_token(self, message: Message, *, requeue: bool | None) -> None:
        """Ack (``requeue=None``) or nack, logging a failure: the broker redelivers then."""
        try:
            if requeue is None:
                await message.ack()
            else:
                await message.nack(requeue=requeue)
        except SETTLE_ERRORS as error:
            if not cancelled_by_broker(error):
                raise
            log.warning("settle_failed", error=repr(error), outcome="will be redelivered")

    # --- shutdown ----------------------------------------------------------------------------

    async def drain(self, deadline: float) -> None:
        """Finish what was received by ``deadline`` (monotonic): lookups answer, failures are
        handed off, rows are flushed and messages acked. What is unfinished then stays unacked
        and returns to the queue when the connection closes."""
        # Messages not yet started go straight back to the queue, for another consumer. They
        # leave the waiting line before the first await: while a nack is written, a finishing
        # lookup pumps the line and would otherwise start (or pop) one of them.
        idle = [d for d in self._waiting if d.next_index == 0]
        self._waiting = deque(d for d in self._waiting if d.next_index)
        for delivery in idle:
            delivery.finished = True
            self._forget(delivery)
        for delivery in idle:
            await self._settle_token(delivery.token, requeue=True)
        remaining = deadline - time.monotonic()
        if self._in_process and remaining > 0:
            try:
                await asyncio.wait_for(self._all_settled.wait(), remaining)
            except TimeoutError:
                log.warning("drain_incomplete", unsettled=self.unsettled, in_flight=self.in_flight)
        for task in list(self._lookups.values()):
            task.cancel()
        self._waiting.clear()

    async def wait_side_tasks(self, deadline: float) -> None:
        """Let acks and hand-offs already under way reach the broker by ``deadline``."""
        remaining = deadline - time.monotonic()
        if self._side_tasks and remaining > 0:
            await asyncio.wait(list(self._side_tasks), timeout=remaining)
