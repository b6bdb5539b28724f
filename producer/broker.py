"""What the producer needs of a broker, whichever it is: one small interface, two implementations
side by side — :class:`producer.publisher.Publisher` (RabbitMQ, publisher confirms) and
:class:`producer.pubsub_publisher.PubSubPublisher` (Google Pub/Sub, message ids returned).
:func:`producer.service.running_core` picks one from ``BROKER``, once.

The promise behind every method is the same for both: a message counts as published only once the
broker said it is durable (a confirm; a message id). What is not, the caller spools.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from common.messages import OutgoingMessage
from producer.view import BrokerState


class BrokerRefused(RuntimeError):
    """The broker refuses this producer for good (credentials unusable or refused, permission
    denied): retrying cannot help, the service exits 1 with this one line."""


class ProducerBroker(Protocol):
    """The broker as :class:`producer.ingest.Ingest` and :class:`producer.relay.Relay` use it."""

    @property
    def state(self) -> BrokerState:
        """What ``/ready`` reports; ``connected`` only while publishes are expected to succeed."""
        ...

    @property
    def accepting(self) -> bool:
        """Whether a callback should be published directly (the state is ``connected``) rather
        than spooled without waiting; read on every callback."""
        ...

    @property
    def connected(self) -> bool:
        """Connected, degraded or blocked: the relay may try; a drain may wait."""
        ...

    async def wait_connected(self) -> None: ...

    async def publish(
        self, messages: Sequence[OutgoingMessage], confirm_timeout: float
    ) -> list[OutgoingMessage]:
        """Publish a callback's ``messages``; return those the broker did not make durable
        within ``confirm_timeout`` s (empty: all of them are). Anything left over degrades the
        broker, so that the next callbacks spool without waiting."""
        ...

    async def publish_spooled(
        self, messages: Sequence[OutgoingMessage], confirm_timeout: float
    ) -> list[OutgoingMessage]:
        """:meth:`publish` for the relay: a round published whole ends the degraded state."""
        ...

    def spool_empty(self) -> None:
        """The relay has nothing to send: callbacks may try the broker directly again."""
        ...

    async def wait_refused(self) -> BrokerRefused:
        """Return once the broker refuses this producer for good (the service then stops and
        exits 1); while it merely fails, never."""
        ...

    def running(self) -> AbstractAsyncContextManager[ProducerBroker]:
        """Own the broker's client for the life of the block: connect (and create the topology)
        in the background, never making start-up wait; close on the way out. Raises
        :class:`BrokerRefused` on entry when the credentials are unusable."""
        ...
