"""The id flow: work messages in, status lookups, rows to the batch writer, acks out.

Each received message becomes a :class:`~consumer.ledger.Delivery`; its ids are fed to lookups
while fewer than ``MAX_CONSUMERS`` are in flight (so the status API never sees more from this
process); lookups of an id already in flight join it (single-flight). An online answer goes to
the batch writer with the time it arrived; an offline one settles the id; a failure is kept until
the message's last lookup answers, then all its failures go, as one message, to a retry tier or
(out of attempts) to the dead-letter queue. The message is acked once every id is settled.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractIncomingMessage
from prometheus_client import CollectorRegistry

from common.amqp import AMQP_ERRORS, SETTLE_ERRORS, Topology, cancelled_by_broker
from common.messages import MalformedMessage, decode_message
from consumer.backoff import plan_retry
from consumer.batch_writer import BatchWriter
from consumer.dead_letter import exhausted_letter, malformed_letter
from consumer.ledger import Delivery, Next, exhausted, summarize
from consumer.metrics import ConsumerMetrics
from consumer.retry import retry_message
from consumer.settings import ConsumerSettings
from consumer.single_flight import Flights
from consumer.status_client import StatusClient, StatusFailure

log = structlog.get_logger(__name__)

Message = AbstractIncomingMessage
Publish = Callable[[aio_pika.Message, str], Awaitable[None]]


class Worker:
    def __init__(
        self,
        settings: ConsumerSettings,
        status: StatusClient,
        publish: Publish,
        rng: random.Random | None = None,
        metrics: ConsumerMetrics | None = None,
    ) -> None:
        self._settings = settings
        self._status = status
        self._publish = publish
        self._rng = rng or random.Random()
        self.metrics = metrics or ConsumerMetrics(CollectorRegistry())
        self._topology = Topology(settings.queue_name)
        self._max_in_flight = settings.max_consumers
        # loop.create_task, not asyncio.create_task: the latter's get_running_loop() costs a
        # getpid() system call per lookup (Python 3.11).
        self._loop = asyncio.get_running_loop()
        self._waiting: deque[Delivery[Message]] = deque()
        self._flights: Flights[Delivery[Message]] = Flights()
        self._lookups: dict[int, asyncio.Task[None]] = {}
        self._side_tasks: set[asyncio.Task[None]] = set()
        self.in_process: set[Delivery[Message]] = set()
        self._all_settled = asyncio.Event()
        self._all_settled.set()
        self._paused = False
        self.last_delivery_at = time.monotonic()
        self.writer: BatchWriter[Delivery[Message]] | None = None
        self.stats = {"messages": 0, "ids": 0, "acked": 0, "retried": 0, "dead": 0}

    def attach(self, writer: BatchWriter[Delivery[Message]]) -> None:
        self.writer = writer

    # --- messages in -------------------------------------------------------------------------

    async def on_message(self, message: Message) -> None:
        """The subscription's callback: never raises; a message is acked, dead-lettered or left
        unacked (to be redelivered), never requeued in a loop."""
        self.last_delivery_at = time.monotonic()
        self.stats["messages"] += 1
        try:
            work = decode_message(message.body)
        except MalformedMessage as error:
            await self._dead_letter_malformed(message, str(error))
            return
        delivery = Delivery(message, work)
        self.stats["ids"] += len(work.ids)
        self.in_process.add(delivery)
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

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def in_flight(self) -> int:
        return len(self._flights)

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
            online = await self._status.online(object_id)
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
        writer = self.writer
        assert writer is not None
        for delivery in self._flights.land(object_id):
            if reason is not None:
                delivery.failed(object_id, reason)
            elif online:
                delivery.answered_online()
                writer.add(object_id, seen, delivery)
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
            self._spawn(self._ack(delivery))
        elif step is Next.HAND_OFF:
            self._spawn(self._hand_off(delivery))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    def _forget(self, delivery: Delivery[Message]) -> None:
        self.in_process.discard(delivery)
        if not self.in_process:
            self._all_settled.set()

    async def _ack(self, delivery: Delivery[Message]) -> None:
        self._forget(delivery)
        try:
            await delivery.token.ack()
            self.stats["acked"] += 1
        except SETTLE_ERRORS as error:
            if not cancelled_by_broker(error):
                raise
            # The channel it came on is gone (reconnect): the broker redelivers it, and the
            # redelivery is harmless (upserts only move forward).
            log.warning(
                "ack_failed",
                callback_id=delivery.work.callback_id,
                error=repr(error),
                outcome="will be redelivered",
            )

    async def _hand_off(self, delivery: Delivery[Message]) -> None:
        work, failures = delivery.work, delivery.failures
        try:
            if exhausted(work.attempt, self._settings.max_attempts):
                await self._publish(exhausted_letter(work, failures), self._topology.dead)
                self.stats["dead"] += len(failures)
                log.warning(
                    "ids_dead_lettered",
                    callback_id=work.callback_id,
                    ids=len(failures),
                    attempts=work.attempt + 1,
                    reason=summarize(failures),
                )
            else:
                plan = plan_retry(
                    work.attempt + 1,
                    self._settings.retry_base_delay,
                    self._settings.retry_max_delay,
                    self._rng,
                )
                message = retry_message(work, sorted(failures), plan.expiration_ms)
                await self._publish(message, self._topology.retry(plan.tier_ms))
                self.stats["retried"] += len(failures)
                log.info(
                    "ids_retry_scheduled",
                    callback_id=work.callback_id,
                    ids=len(failures),
                    attempt=work.attempt + 1,
                    delay_ms=plan.expiration_ms,
                    reason=summarize(failures),
                )
        except SETTLE_ERRORS as error:
            if not cancelled_by_broker(error):
                raise
            # Not handed off, so not settled: give the message back whole. Its ids are looked up
            # again (the quorum queue's delivery limit stops a message that always fails here).
            log.warning("hand_off_failed", callback_id=work.callback_id, error=repr(error))
            delivery.finished = True
            self._forget(delivery)
            await self._settle_token(delivery.token, requeue=True)
            return
        delivery.hand_off_done()
        self._advance(delivery)

    async def _dead_letter_malformed(self, message: Message, reason: str) -> None:
        try:
            await self._publish(malformed_letter(message.body, reason), self._topology.dead)
        except AMQP_ERRORS as error:
            log.warning("dead_letter_failed", reason=reason, error=repr(error))
            await self._settle_token(message, requeue=True)
            return
        self.stats["dead"] += 1
        log.warning("message_dead_lettered", reason=reason, message_id=message.message_id)
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
        if self.in_process and remaining > 0:
            try:
                await asyncio.wait_for(self._all_settled.wait(), remaining)
            except TimeoutError:
                log.warning(
                    "drain_incomplete", unsettled=len(self.in_process), in_flight=self.in_flight
                )
        for task in list(self._lookups.values()):
            task.cancel()
        self._waiting.clear()

    async def wait_side_tasks(self, deadline: float) -> None:
        """Let acks and hand-offs already under way reach the broker by ``deadline``."""
        remaining = deadline - time.monotonic()
        if self._side_tasks and remaining > 0:
            await asyncio.wait(list(self._side_tasks), timeout=remaining)
