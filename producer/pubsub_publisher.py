"""Publishing to Google Pub/Sub: the :class:`producer.broker.ProducerBroker` for ``BROKER=pubsub``.

A message counts as published once Pub/Sub returned its message id (the service stores a message
before it answers); each goes to the topic ``QUEUE_NAME`` with its ``message_id`` as an attribute.
The client (google-cloud-pubsub, docs/pubsub.md) publishes from its own threads; its futures are
awaited through :func:`asyncio.wrap_future`, so the event loop never blocks on the network.

:meth:`PubSubPublisher.running` builds the clients (unusable credentials: :class:`BrokerRefused`
at once) and, in the background, creates what is missing of the topology. It is ``connecting``
until that succeeded — a topic without its work subscription drops what is published to it, so
nothing is published before — and again whenever the topic turns out missing or two relay rounds
in a row went unconfirmed (the same rule as RabbitMQ's, :mod:`producer.broker_health`): creating
the topology again is how it learns that the service answers. Permission denied or
unauthenticated from the service: :meth:`wait_refused` returns, and the service exits 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import structlog
from google.api_core import exceptions
from google.api_core.retry import Retry, if_exception_type
from google.auth.exceptions import DefaultCredentialsError
from google.cloud import pubsub_v1

from common.broker.pubsub_clients import ensure, publisher_client, subscriber_client
from common.broker.pubsub_topology import PubSubSettings, PubSubTopology
from common.messages import OutgoingMessage
from common.retrying import retry_connect, supervise
from producer.broker import BrokerRefused
from producer.broker_health import BrokerHealth
from producer.view import BrokerState

log = structlog.get_logger(__name__)

MESSAGE_ID_ATTRIBUTE = "message_id"
"""The attribute carrying :attr:`OutgoingMessage.message_id` (Pub/Sub assigns its own ids)."""

BATCH_MAX_LATENCY = 0.001
"""How long the client collects messages before it sends a batch. Its default, 10 ms, is added to
every callback's wait for its message ids; 1 ms costs a callback about a millisecond and still
puts the messages of callbacks arriving together into one request: measured with
``python -m bench.pubsub_batching``, figures in docs/pubsub.md."""

ENSURE_TIMEOUT = 10.0
"""Each topology call fails after this long instead of the client's own minute of retries: our
backoff (``BROKER_MAX_BACKOFF``) paces the attempts, so recovery follows an outage closely."""


class SubscriptionDetached(RuntimeError):
    """The work subscription exists but is not on the topic (the topic was deleted and created
    again: Pub/Sub keeps the old subscription, detached). Published messages would reach no
    subscription and be dropped, so the producer stays ``connecting`` and spools until an operator
    deletes the subscription (it is then created again on the topic)."""


# Retried inside a publish's own deadline: what the client library retries by default, less
# DeadlineExceeded (the deadline is ours) and Cancelled (the client is closing).
TRANSIENT = (
    exceptions.ServiceUnavailable,
    exceptions.InternalServerError,
    exceptions.Unknown,
    exceptions.Aborted,
    exceptions.ResourceExhausted,
)
REFUSED = (exceptions.PermissionDenied, exceptions.Unauthenticated)
# Creating the topology: the service is away or answered a passing error. Anything else (a bug, a
# refusal) ends the attempt loop.
ENSURE_RETRY_ON: tuple[type[BaseException], ...] = (
    *TRANSIENT,
    exceptions.DeadlineExceeded,
    exceptions.NotFound,  # the topic deleted between creating it and its subscription
    exceptions.RetryError,
    SubscriptionDetached,
)


@dataclass(frozen=True, slots=True)
class Unpublished:
    """What a publish left without a message id (empty: all published), and why."""

    messages: list[OutgoingMessage]
    reasons: frozenset[str] = frozenset()
    topic_missing: bool = False
    refused: BaseException | None = None


@dataclass
class _Clients:
    """One client per timeout: a batch takes the deadline of its first message, so callbacks
    (``PUBLISH_TIMEOUT``) and relay rounds (``RELAY_PUBLISH_TIMEOUT``) must not share batches."""

    callbacks: pubsub_v1.PublisherClient
    relay: pubsub_v1.PublisherClient
    retries: dict[float, Retry] = field(default_factory=dict)

    def retry(self, deadline: float) -> Retry:
        if (retry := self.retries.get(deadline)) is None:
            retry = self.retries[deadline] = Retry(
                predicate=if_exception_type(*TRANSIENT),
                initial=0.01,
                maximum=max(deadline / 4, 0.01),
                multiplier=2,
                timeout=deadline,
            )
        return retry

    def close(self) -> None:
        for client in (self.callbacks, self.relay):
            client.stop()  # sends what is batched; does not wait for the answers
            client.transport.close()


class PubSubPublisher:
    """Build it, then hold :meth:`running` open for as long as callbacks may publish."""

    def __init__(
        self,
        settings: PubSubSettings,
        topology: PubSubTopology,
        *,
        max_backoff: float,
        batch_max_latency: float = BATCH_MAX_LATENCY,
    ) -> None:
        self._settings = settings
        self._topology = topology
        self._max_backoff = max_backoff
        self._batch_max_latency = batch_max_latency
        self._clients: _Clients | None = None
        self._health = BrokerHealth()
        self._ensured = asyncio.Event()
        self._recheck = asyncio.Event()
        self._refusal: asyncio.Future[BrokerRefused] | None = None
        self._stopped = False

    @property
    def state(self) -> BrokerState:
        if self._stopped:
            return BrokerState.STOPPED
        if not self._ensured.is_set():
            return BrokerState.CONNECTING
        if self._health.degraded:
            return BrokerState.DEGRADED
        return BrokerState.CONNECTED

    @property
    def accepting(self) -> bool:
        return self._ensured.is_set() and not self._health.degraded and not self._stopped

    @property
    def connected(self) -> bool:
        return self._ensured.is_set() and not self._stopped

    async def wait_connected(self) -> None:
        await self._ensured.wait()

    async def wait_refused(self) -> BrokerRefused:
        if self._refusal is None:
            raise RuntimeError("wait_refused() outside running()")
        return await asyncio.shield(self._refusal)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[PubSubPublisher]:
        """Keep the topology ensured in the background while inside; close the clients on the
        way out. Raises :class:`BrokerRefused` at once if the credentials are unusable."""
        # In a thread: finding Application Default Credentials may ask the metadata server.
        self._clients = await asyncio.to_thread(self._open_clients)
        self._refusal = asyncio.get_running_loop().create_future()
        keeping = asyncio.create_task(
            supervise("pubsub-topology", self._keep_topology, maximum=self._max_backoff),
            name="pubsub-topology",
        )
        try:
            yield self
        finally:
            self._stopped = True
            self._ensured.clear()
            keeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeping
            await asyncio.to_thread(self._clients.close)

    def _open_clients(self) -> _Clients:
        batching = pubsub_v1.types.BatchSettings(max_latency=self._batch_max_latency)
        try:
            return _Clients(
                publisher_client(self._settings, batch_settings=batching),
                publisher_client(self._settings),
            )
        except DefaultCredentialsError as error:
            # google-auth puts the sentence first and the underlying error after it
            why = error.args[0] if error.args else repr(error)
            raise BrokerRefused(
                f"pubsub credentials unusable (GOOGLE_APPLICATION_CREDENTIALS or the workload's "
                f"identity): {why}"
            ) from None

    async def _keep_topology(self) -> None:
        """Create the topology (again) whenever it is not known to exist; stop on a refusal."""
        while not self._stopped:
            try:
                await retry_connect(
                    f"pubsub ({self._topology.topic})",
                    self._ensure,
                    deadline=math.inf,
                    retry_on=ENSURE_RETRY_ON,
                    maximum=self._max_backoff,
                )
            except REFUSED as error:
                self._refuse(error)
                return
            self._health.connection_opened()
            self._recheck.clear()
            self._ensured.set()
            await self._recheck.wait()
            self._ensured.clear()

    async def _ensure(self) -> None:
        await ensure(
            self._settings,
            self._topology,
            call_timeout=ENSURE_TIMEOUT,
        )
        await asyncio.to_thread(self._check_subscription)

    def _check_subscription(self) -> None:
        """Raise :class:`SubscriptionDetached` unless the work subscription is on the topic: a
        topic without it drops what is published to it, so no 202 may rest on it."""
        subscriber = subscriber_client(self._settings)
        try:
            subscription = subscriber.get_subscription(
                subscription=self._topology.work_subscription, retry=None, timeout=ENSURE_TIMEOUT
            )
        finally:
            subscriber.close()
        if subscription.topic != self._topology.topic:
            raise SubscriptionDetached(
                f"{self._topology.work_subscription} is on {subscription.topic!r}, not "
                f"{self._topology.topic!r}: delete it so that it is created again on the topic"
            )

    def _refuse(self, error: BaseException) -> None:
        if self._refusal is not None and not self._refusal.done():
            self._refusal.set_result(BrokerRefused(f"pubsub refused the producer: {error}"))

    def _reset(self, reason: str) -> None:
        """Go back to ``connecting`` until the topology has been created again."""
        if self._ensured.is_set():
            log.warning("broker_connection_reset", reason=reason)
            self._recheck.set()

    async def publish(
        self, messages: Sequence[OutgoingMessage], confirm_timeout: float
    ) -> list[OutgoingMessage]:
        clients = self._clients
        if clients is None or not self.connected:
            return list(messages)
        unpublished = await self._publish(clients.callbacks, clients, messages, confirm_timeout)
        if unpublished.messages:
            self._unpublished(unpublished)
        return unpublished.messages

    async def publish_spooled(
        self, messages: Sequence[OutgoingMessage], confirm_timeout: float
    ) -> list[OutgoingMessage]:
        clients = self._clients
        if clients is None or not self.connected:
            return list(messages)
        unpublished = await self._publish(clients.relay, clients, messages, confirm_timeout)
        if unpublished.messages:
            self._unpublished(unpublished)
        was_degraded = self._health.degraded
        if self._health.relay_round(confirmed=not unpublished.messages):
            self._reset("two relay rounds in a row unpublished")
        elif was_degraded and not self._health.degraded:
            log.info("broker_recovered")
        return unpublished.messages

    def spool_empty(self) -> None:
        if self._health.spool_empty():
            log.info("broker_recovered")

    async def _publish(
        self,
        client: pubsub_v1.PublisherClient,
        clients: _Clients,
        messages: Sequence[OutgoingMessage],
        deadline: float,
    ) -> Unpublished:
        """Publish ``messages``; wait at most ``deadline`` s for their message ids.

        The request carries the same deadline and retries only inside it, so a publish the
        client could not finish fails rather than going on in the background (the client's own
        retries last up to ten minutes) and arriving after the callback was spooled.
        """
        if not messages:
            return Unpublished([])
        retry = clients.retry(deadline)
        topic = self._topology.topic
        answers: list[asyncio.Future[str]] = []
        try:
            for message in messages:
                published: Future[str] = client.publish(
                    topic,
                    message.body,
                    retry=retry,
                    timeout=deadline,
                    **{MESSAGE_ID_ATTRIBUTE: message.message_id},
                )
                answers.append(asyncio.wrap_future(published))
        except RuntimeError as error:  # the client is stopping
            for answer in answers:
                answer.cancel()
            return Unpublished(list(messages), frozenset({repr(error)}))
        _, pending = await asyncio.wait(answers, timeout=deadline)
        for answer in pending:
            answer.cancel()  # nothing to cancel in the client; only stop watching it
        return settle(messages, answers)

    def _unpublished(self, unpublished: Unpublished) -> None:
        if unpublished.refused is not None:
            self._refuse(unpublished.refused)
        if self._health.publish_unconfirmed():
            log.warning(
                "broker_degraded",
                unconfirmed=len(unpublished.messages),
                reasons=sorted(unpublished.reasons),
            )
        if unpublished.topic_missing:
            self._reset("topic missing")


def settle(
    messages: Sequence[OutgoingMessage], answers: Sequence[asyncio.Future[str]]
) -> Unpublished:
    """What of ``messages`` got no message id (``answers[i]``, done or cancelled when the
    deadline passed), and what follows: a missing topic is created again, a refusal stops the
    producer."""
    failed: list[OutgoingMessage] = []
    reasons: set[str] = set()
    missing = False
    refused: BaseException | None = None
    for message, answer in zip(messages, answers, strict=True):
        if answer.cancelled():
            reasons.add("publish timeout")
        elif (error := answer.exception()) is not None:
            reasons.add(repr(error))
            missing = missing or isinstance(error, exceptions.NotFound)
            if isinstance(error, REFUSED):
                refused = error
        else:
            continue
        failed.append(message)
    return Unpublished(failed, frozenset(reasons), missing, refused)
