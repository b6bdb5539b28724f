"""The consumer on Google Pub/Sub (:mod:`consumer.broker`'s second implementation).

Work arrives by streaming pull on the subscription ``q.work`` (``SubscriberClient.subscribe``).
The client's ``FlowControl`` bounds the messages held at once by the same figure as RabbitMQ's
prefetch (``PREFETCH``, or sized from ``MAX_CONSUMERS``), and its lease manager extends the ack
deadline of every held message while its lookups run, up to ``MAX_LEASE_S``. Callbacks arrive on
the client's threads: each is handed to the event loop with ``loop.call_soon_threadsafe``, and
the worker acks only after the store committed.

Retries are the consumer's own delay, as on RabbitMQ: the message is held (its lease extended)
for the jittered backoff, then only its failed ids, one attempt further, are published to the
topic ``q``, and the original is acked once that publish is confirmed. The subscription's retry
policy is not used: a nack would redeliver the whole message (every id looked up again) on a
schedule the emulator does not follow. The subscription's dead-letter policy
(``common.broker.pubsub_topology.DELIVERY_ATTEMPTS`` deliveries) is the backstop for a
message that keeps coming back unsettled (consumers crashing on it). Dead letters
(ids out of attempts, malformed messages) are published to the topic ``q.dead`` with the same
body as RabbitMQ's and the headers as string attributes. docs/pubsub.md says why.

The stream outlives outages: the client reconnects it by itself while Pub/Sub is unreachable,
but gives it up when a lease extension has failed for its whole retry deadline (60 s): it ends
the stream with ``RetryError`` and, by design, lets the exception out of its lease thread. The
subscription then opens a new stream on the same subscription (``subscribe`` again), after
:data:`RESUBSCRIBE_DELAY_S`; the messages the old stream held come back after their ack deadline
and are looked up again (the upsert is idempotent). Only a stream ended by anything else (the
subscription deleted, permission refused) ends the consumer. The lease thread's exception is
logged as a warning (:func:`lease_thread_warnings`) rather than as a traceback on stderr.

Shutdown: ``cancel()`` stops handing messages to the worker (those arriving meanwhile are held,
then nacked when the stream closes), cuts short the retry delays (held retries are published at
once), and the stream stays open so that the acks of the drain still reach Pub/Sub; it is closed
when the broker closes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import structlog
from google.api_core import exceptions as api_exceptions
from google.auth import exceptions as auth_exceptions
from google.cloud import pubsub_v1
from google.cloud.pubsub_v1.subscriber.message import Message as ReceivedMessage

from common.broker.pubsub_clients import ensure, publisher_client, subscriber_client
from common.broker.pubsub_topology import DELIVERY_ATTEMPTS, PubSubSettings, PubSubTopology
from common.messages import CONTENT_TYPE, IdsMessage
from common.retrying import DependencyUnavailable, retry_connect
from consumer.backoff import RetryPlan
from consumer.broker import HandOffFailed, Intake, Letter

log = structlog.get_logger(__name__)

PUBLISH_TIMEOUT = 10.0
CLOSE_TIMEOUT = 5.0
# The subscription's ack deadline when the consumer creates it. Streaming pull sets its own
# deadlines on what it delivers (the client's lease manager), so this one only applies to
# messages pulled otherwise.
ACK_DEADLINE_S = 60
# What Pub/Sub answers for a failed publish or a stream that ended.
PUBSUB_ERRORS: tuple[type[BaseException], ...] = (
    api_exceptions.GoogleAPIError,
    concurrent.futures.TimeoutError,
    TimeoutError,
    RuntimeError,  # the publisher was stopped
)
# Unreachable (worth waiting for at start) as opposed to refused (not).
UNREACHABLE = (
    api_exceptions.ServiceUnavailable,
    api_exceptions.DeadlineExceeded,
    api_exceptions.RetryError,
)
REFUSED = (
    auth_exceptions.GoogleAuthError,
    api_exceptions.PermissionDenied,
    api_exceptions.Unauthenticated,
)
# A stream that ended with one of these is opened again; anything else ends the consumer.
STREAM_LOST = (
    *UNREACHABLE,
    api_exceptions.InternalServerError,
    api_exceptions.Aborted,
    api_exceptions.Unknown,
)
RESUBSCRIBE_DELAY_S = 1.0
# The client's lease thread (``google.cloud.pubsub_v1.subscriber._protocol.leaser``).
LEASE_THREAD = "Thread-LeaseMaintainer"


# The client's thread that sends acks and lease extensions logs each failure with its traceback.
HELPER_THREADS_LOGGER = "google.cloud.pubsub_v1.subscriber._protocol.helper_threads"


class _OutageRecord(logging.Filter):
    """A helper thread's record of an ack or lease extension that could not reach Pub/Sub: kept
    as a warning with the error, without the traceback (those messages come back after their
    ack deadline; the consumer logs the outage itself)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], UNREACHABLE):
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


@contextlib.contextmanager
def lease_thread_warnings() -> Iterator[None]:
    """While open, what the client does on purpose in an outage is a warning, not a traceback:
    its lease thread raises when it gave up extending leases (it has ended the stream first,
    and :meth:`PubSubSubscription.supervise` opens a new one), and its helper threads log the
    acks that could not be sent (:class:`_OutageRecord`). Other threads' exceptions go to the
    ``threading.excepthook`` that was there before."""
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        thread = args.thread
        if (
            thread is not None
            and thread.name == LEASE_THREAD
            and isinstance(args.exc_value, api_exceptions.GoogleAPIError)
        ):
            log.warning("pubsub_lease_thread_ended", error=repr(args.exc_value))
            return
        previous(args)

    helpers = logging.getLogger(HELPER_THREADS_LOGGER)
    outage = _OutageRecord()
    threading.excepthook = hook
    helpers.addFilter(outage)
    try:
        yield
    finally:
        helpers.removeFilter(outage)
        threading.excepthook = previous


def max_lease_for(retry_max_delay: float, status_timeout: float) -> float:
    """How long the client extends a held message's lease: its longest retry delay, a few
    lookups' timeouts, and an hour for a store outage (the worker pauses, messages stay held).
    Past it the message is redelivered, which counts a delivery attempt."""
    return retry_max_delay + 4 * status_timeout + 3600


class PubSubMessage:
    """A received message as the worker's :class:`~consumer.broker.Message`. The client's
    ``ack``/``nack`` only queue a request for its dispatcher thread: they never block."""

    __slots__ = ("_message",)

    def __init__(self, message: ReceivedMessage) -> None:
        self._message = message

    @property
    def body(self) -> bytes:
        return bytes(self._message.data)

    @property
    def message_id(self) -> str | None:
        return str(self._message.message_id)

    async def ack(self) -> None:
        self._message.ack()

    async def nack(self, *, requeue: bool) -> None:
        # Pub/Sub cannot drop a message: without requeue it comes back too, and the
        # subscription's dead-letter policy ends it.
        self._message.nack()


class PubSubHandOff:
    """Retries after the consumer's own delay, and dead letters, by confirmed publishes."""

    def __init__(self, publisher: pubsub_v1.PublisherClient, topology: PubSubTopology) -> None:
        self._publisher = publisher
        self._topology = topology
        self._hurry = asyncio.Event()

    def hurry(self) -> None:
        """Shutting down: publish held retries at once instead of at the end of their delay."""
        self._hurry.set()

    async def retry(self, work: IdsMessage, plan: RetryPlan) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._hurry.wait(), plan.expiration_ms / 1000)
        await self._publish(self._topology.topic, work.encode(), {})

    async def dead_letter(self, letter: Letter) -> None:
        attributes = {name: str(value) for name, value in letter.headers.items()}
        await self._publish(self._topology.dead_topic, letter.body, attributes)

    async def _publish(self, topic: str, body: bytes, attributes: dict[str, str]) -> None:
        try:
            future = self._publisher.publish(topic, body, content_type=CONTENT_TYPE, **attributes)
            await asyncio.wait_for(asyncio.wrap_future(future), PUBLISH_TIMEOUT)
        except PUBSUB_ERRORS as error:
            raise HandOffFailed(repr(error)) from error


class PubSubSubscription:
    """A streaming pull feeding ``intake``; see the module docstring."""

    def __init__(
        self,
        subscriber: pubsub_v1.SubscriberClient,
        subscription: str,
        intake: Intake,
        flow_control: pubsub_v1.types.FlowControl,
        on_cancel: Callable[[], None],
    ) -> None:
        self._intake = intake
        self._subscriber = subscriber
        self._subscription = subscription
        self._flow_control = flow_control
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        self._held: list[ReceivedMessage] = []
        self._stopping = False
        self._closing = False
        self._closing_lock = threading.Lock()
        self._on_cancel = on_cancel
        self._ended = asyncio.Event()
        self.streams_opened = 0
        self._future = self._open_stream()

    def _open_stream(self) -> pubsub_v1.subscriber.futures.StreamingPullFuture:
        self._ended.clear()
        future = self._subscriber.subscribe(
            self._subscription,
            self._on_client_thread,
            flow_control=self._flow_control,
            # The stream's shutdown waits for a callback under way: its nack is sent.
            await_callbacks_on_shutdown=True,
        )
        future.add_done_callback(self._on_end)
        self.streams_opened += 1
        log.info(
            "subscribed",
            subscription=self._subscription,
            max_messages=self._flow_control.max_messages,
            max_lease_s=self._flow_control.max_lease_duration,
        )
        return future

    def _on_client_thread(self, message: ReceivedMessage) -> None:
        with self._closing_lock:
            if self._closing:
                message.nack()
                return
            # The loop closed: unacked, the message returns after its deadline.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._deliver, message)

    def _on_end(self, _: object) -> None:
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._ended.set)

    def _deliver(self, message: ReceivedMessage) -> None:
        if self._closing:
            message.nack()
            return
        if self._stopping:
            self._held.append(message)
            return
        task = self._loop.create_task(self._intake.on_message(PubSubMessage(message)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def connected(self) -> bool:
        return not self._future.done()

    async def supervise(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set. A stream the client gave up on while Pub/Sub was unreachable
        (:data:`STREAM_LOST`) is opened again; any other end (the subscription deleted,
        permission refused) raises."""
        while not stop.is_set():
            stopping = asyncio.ensure_future(stop.wait())
            ended = asyncio.ensure_future(self._ended.wait())
            try:
                await asyncio.wait([stopping, ended], return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
                ended.cancel()
            if stop.is_set():
                return
            error = self._future.exception()
            if not isinstance(error, STREAM_LOST):
                raise RuntimeError(f"pubsub subscription ended: {error!r}") from error
            log.warning("pubsub_stream_lost", error=repr(error), reopen_in_s=RESUBSCRIBE_DELAY_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RESUBSCRIBE_DELAY_S)
            if not stop.is_set() and not self._closing:
                self._future = self._open_stream()

    async def cancel(self) -> None:
        """Stop handing messages to the worker; the stream stays open for the drain's acks."""
        self._stopping = True
        self._on_cancel()

    async def close(self) -> None:
        """Give back what arrived after :meth:`cancel`, then close the stream (acks and nacks
        queued before are sent first)."""
        # From here the client's threads nack what arrives; hand-overs they made before are
        # already on the loop and run first. All are nacked, with the held ones, before the
        # stream (and with it the client's dispatcher of acks and nacks) stops. Not nacked at
        # once on cancel: with nobody else consuming, each nack is an immediate redelivery to
        # this stream, and each counts a delivery attempt toward the dead-letter policy.
        with self._closing_lock:
            self._stopping = self._closing = True
        await asyncio.sleep(0)
        for message in self._held:
            message.nack()
        self._held.clear()
        self._future.cancel()
        with contextlib.suppress(*PUBSUB_ERRORS, concurrent.futures.CancelledError):
            await asyncio.to_thread(self._future.result, CLOSE_TIMEOUT)


class PubSubBroker:
    def __init__(
        self,
        publisher: pubsub_v1.PublisherClient,
        subscriber: pubsub_v1.SubscriberClient,
        topology: PubSubTopology,
        flow_control: pubsub_v1.types.FlowControl,
        label: str,
    ) -> None:
        self._subscriber = subscriber
        self._topology = topology
        self._flow_control = flow_control
        self.label = label
        self.hand_off = PubSubHandOff(publisher, topology)
        self.subscriptions: list[PubSubSubscription] = []

    def connected(self) -> bool:
        return bool(self.subscriptions) and all(s.connected() for s in self.subscriptions)

    async def subscribe(self, intake: Intake) -> PubSubSubscription:
        subscription = PubSubSubscription(
            self._subscriber,
            self._topology.work_subscription,
            intake,
            self._flow_control,
            self.hand_off.hurry,
        )
        self.subscriptions.append(subscription)
        return subscription


async def open_clients(
    settings: PubSubSettings,
    topology: PubSubTopology,
    *,
    max_delivery_attempts: int = DELIVERY_ATTEMPTS,
    startup_timeout: float,
    ack_deadline_s: int = ACK_DEADLINE_S,
) -> tuple[pubsub_v1.PublisherClient, pubsub_v1.SubscriberClient]:
    """Ensure the topology (retried while Pub/Sub is unreachable, up to ``startup_timeout``) and
    build the clients. Refused credentials raise :class:`DependencyUnavailable` at once."""
    target = f"pubsub ({settings.emulator_host or 'pubsub.googleapis.com'})"

    async def attempt() -> None:
        await ensure(
            settings,
            topology,
            max_delivery_attempts=max_delivery_attempts,
            ack_deadline_s=ack_deadline_s,
        )

    try:
        await retry_connect(target, attempt, deadline=startup_timeout, retry_on=UNREACHABLE)
        return await asyncio.to_thread(
            lambda: (publisher_client(settings), subscriber_client(settings))
        )
    except REFUSED as error:
        line = " ".join(str(error).split())
        raise DependencyUnavailable(f"{target} refused the credentials: {line}") from None


@contextlib.asynccontextmanager
async def open_pubsub(
    settings: PubSubSettings,
    topology: PubSubTopology,
    *,
    max_delivery_attempts: int = DELIVERY_ATTEMPTS,
    startup_timeout: float,
    max_messages: int,
    max_lease_s: float,
) -> AsyncIterator[PubSubBroker]:
    """The clients with the topology ensured; at the end the subscriptions are closed, queued
    publishes flushed and the clients closed."""
    publisher, subscriber = await open_clients(
        settings,
        topology,
        max_delivery_attempts=max_delivery_attempts,
        startup_timeout=startup_timeout,
    )
    ack_deadline_s = await asyncio.to_thread(
        lambda: (
            subscriber.get_subscription(
                subscription=topology.work_subscription
            ).ack_deadline_seconds
        )
    )
    flow_control = pubsub_v1.types.FlowControl(
        max_messages=max_messages,
        max_lease_duration=max_lease_s,
        # Leases in steps of the subscription's ack deadline: a consumer that dies holding a
        # message gives it back one deadline later. By default the client asks 60 s of the
        # stream whatever the subscription says (measured: a killed consumer's message was not
        # back within 45 s on a 10 s subscription).
        max_duration_per_lease_extension=ack_deadline_s,
    )
    label = settings.emulator_host or "pubsub.googleapis.com"
    broker = PubSubBroker(publisher, subscriber, topology, flow_control, f"pubsub {label}")
    try:
        with lease_thread_warnings():
            yield broker
    finally:
        for subscription in broker.subscriptions:
            await subscription.close()
        await asyncio.to_thread(close_clients, publisher, subscriber)


def close_clients(publisher: Any, subscriber: Any) -> None:
    publisher.stop()  # sends what is batched
    publisher.transport.close()
    subscriber.close()
