"""One long-lived broker connection and confirm-mode channel, and confirmed publishing on it.

:meth:`Publisher.running` owns the connection for its whole life: in the background (start-up
never waits for the broker) it connects, declares the topology, and re-establishes both through
:func:`common.retrying.retry_connect` whenever the connection or channel closes; on exit it closes
the connection. Publishing never waits for a connection: without one, or while the broker blocks
publishers (resource alarm), or while degraded (:mod:`producer.broker_health`), :attr:`accepting`
is false and callers spool instead. The relay publishes through :meth:`publish_spooled` and
reports an empty spool through :meth:`spool_empty`: those events end the degraded state.

How a message is published and confirmed, and how a broker alarm is noticed, is the business of
:mod:`producer.publish_modes` (``PUBLISH_MODE``): this module sees only its small interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import ssl
from collections.abc import AsyncIterator, Sequence

import aio_pika
import structlog

from common.amqp import CONNECT_ERRORS, TLS_HINT, declare_topology
from common.messages import OutgoingMessage
from common.nodes import connect_any, parse_amqp_nodes, shuffled
from common.retrying import retry_connect, supervise
from common.tls import certificate_refused, describe_refusal
from producer.broker import BrokerRefused
from producer.broker_health import BrokerHealth
from producer.confirms import ConfirmedPublisher, PublishMode, Unconfirmed
from producer.publish_modes import open_confirmed_publisher
from producer.view import BrokerState

log = structlog.get_logger(__name__)


class Publisher:
    """Build it, then hold :meth:`running` open for as long as callbacks may publish."""

    def __init__(
        self,
        amqp_uri: str,
        queue_name: str,
        *,
        max_backoff: float,
        mode: PublishMode = PublishMode.PIPELINE,
        connection_name: str = "lastseen-producer",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        # Several nodes: an order of this process's own; after a lost connection, the next node
        # is tried first (the one just lost is likely dead).
        self._nodes = shuffled(parse_amqp_nodes(amqp_uri))
        self._first_node = 0
        self._ssl_context = ssl_context
        self._tls_refusal_logged = False
        self._queue_name = queue_name
        self._max_backoff = max_backoff
        self._mode = mode
        self._connection_name = connection_name
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._confirms: ConfirmedPublisher | None = None
        self._lost = asyncio.Event()
        self._connected = asyncio.Event()
        self._health = BrokerHealth()
        self._stopped = False

    @property
    def state(self) -> BrokerState:
        channel, confirms = self._channel, self._confirms
        if self._stopped:
            return BrokerState.STOPPED
        if channel is None or confirms is None or channel.is_closed:
            return BrokerState.CONNECTING
        if confirms.blocked:
            return BrokerState.BLOCKED
        if self._health.degraded:
            return BrokerState.DEGRADED
        return BrokerState.CONNECTED

    @property
    def accepting(self) -> bool:
        """Whether a callback should be published directly rather than spooled: the state is
        ``connected`` (read on every callback, so without building the state)."""
        channel, confirms = self._channel, self._confirms
        return (
            channel is not None
            and confirms is not None
            and not self._stopped
            and not self._health.degraded
            and not channel.is_closed
            and not confirms.blocked
        )

    @property
    def connected(self) -> bool:
        return self.state in (BrokerState.CONNECTED, BrokerState.DEGRADED, BrokerState.BLOCKED)

    async def wait_connected(self) -> None:
        await self._connected.wait()

    async def wait_refused(self) -> BrokerRefused:
        """Never returns: RabbitMQ's refusals (access refused, a certificate) are retried, since
        an operator can fix them on the broker while the producer answers from the spool."""
        never: asyncio.Future[BrokerRefused] = asyncio.get_running_loop().create_future()
        return await never

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Publisher]:
        """Keep a connection open in the background while inside; close it on the way out."""
        connection = asyncio.create_task(
            supervise("broker-connection", self._run, maximum=self._max_backoff),
            name="broker-connection",
        )
        try:
            yield self
        finally:
            was_connected = self.connected
            self._close()
            if was_connected:
                # Give the connection a moment to close cleanly; a reconnect loop is cancelled.
                await asyncio.wait({connection}, timeout=2)
            connection.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connection

    async def _run(self) -> None:
        """Keep a connection and a confirm-mode channel open until :meth:`_close`."""
        while not self._stopped:
            connection = await retry_connect(
                f"rabbitmq ({self._connection_name})",
                self._open,
                deadline=math.inf,
                retry_on=CONNECT_ERRORS,
                maximum=self._max_backoff,
            )
            try:
                await self._lost.wait()
            finally:
                self._channel = None
                if self._confirms is not None:
                    self._confirms.close()
                    self._confirms = None
                self._connected.clear()
                with contextlib.suppress(*CONNECT_ERRORS, RuntimeError):
                    await asyncio.wait_for(connection.close(), timeout=2)
            self._first_node = (self._first_node + 1) % len(self._nodes)
            if not self._stopped:
                log.warning("broker_connection_lost")

    def _close(self) -> None:
        """Make :meth:`_run` close the connection and return."""
        self._stopped = True
        self._lost.set()

    async def _open(self) -> aio_pika.abc.AbstractConnection:
        index, connection = await connect_any(self._nodes, self._open_on, start=self._first_node)
        self._first_node = index
        return connection

    async def _open_on(self, node: str) -> aio_pika.abc.AbstractConnection:
        try:
            connection = await aio_pika.connect(
                node,
                client_properties={"connection_name": self._connection_name},
                timeout=10,
                ssl_context=self._ssl_context,
            )
        except CONNECT_ERRORS as error:
            self._log_tls_refusal(error)
            raise
        try:
            channel = await connection.channel(publisher_confirms=True)
            await declare_topology(channel, self._queue_name)
            confirms = await open_confirmed_publisher(self._mode, channel, self._queue_name)
        except BaseException:
            with contextlib.suppress(*CONNECT_ERRORS, RuntimeError):
                await connection.close()
            raise
        self._lost.clear()
        connection.close_callbacks.add(self._on_close)
        channel.close_callbacks.add(self._on_close)
        self._channel = channel
        self._confirms = confirms
        self._health.connection_opened()
        self._connected.set()
        return connection

    def _log_tls_refusal(self, error: BaseException) -> None:
        # The producer keeps answering from the spool and retrying (a certificate can be fixed
        # without restarting it), but says once, plainly, why the broker stays away.
        refused = certificate_refused(error)
        if refused is not None and not self._tls_refusal_logged:
            self._tls_refusal_logged = True
            log.error(
                "broker_tls_refused",
                error=describe_refusal(f"rabbitmq ({self._connection_name})", refused, TLS_HINT),
            )

    def _on_close(self, *_: object) -> None:
        self._lost.set()

    def _reset(self, reason: str) -> None:
        """Drop the connection (it will be re-established): its confirms stopped arriving."""
        log.warning("broker_connection_reset", reason=reason)
        self._lost.set()

    async def publish(
        self, messages: Sequence[OutgoingMessage], confirm_timeout: float
    ) -> list[OutgoingMessage]:
        """Publish a callback's ``messages`` persistently; return those the broker did not
        confirm in time.

        An empty list means every message is confirmed. Anything else (no connection, a nack, a
        return because the queue is gone, a confirm later than ``confirm_timeout``) degrades the
        publisher, so that the next callbacks go to the spool without waiting.
        """
        channel, confirms = self._channel, self._confirms
        if channel is None or confirms is None or channel.is_closed:
            return list(messages)
        unconfirmed = await confirms.publish(messages, confirm_timeout)
        if unconfirmed.messages:
            self._unconfirmed(unconfirmed)
        return unconfirmed.messages

    async def publish_spooled(
        self, messages: Sequence[OutgoingMessage], confirm_timeout: float
    ) -> list[OutgoingMessage]:
        """:meth:`publish` for the relay: a round confirmed whole ends the degraded state; rounds
        unconfirmed in a row drop the connection (:mod:`producer.broker_health`)."""
        unconfirmed = await self.publish(messages, confirm_timeout)
        was_degraded = self._health.degraded
        if self._health.relay_round(confirmed=not unconfirmed):
            self._reset("two relay rounds in a row unconfirmed")
        elif was_degraded and not self._health.degraded:
            log.info("broker_recovered")
        return unconfirmed

    def spool_empty(self) -> None:
        """The relay has nothing to send: callbacks may try the broker directly again."""
        if self._health.spool_empty():
            log.info("broker_recovered")

    def _unconfirmed(self, unconfirmed: Unconfirmed) -> None:
        if self._health.publish_unconfirmed():
            log.warning(
                "broker_degraded",
                unconfirmed=len(unconfirmed.messages),
                reasons=sorted(unconfirmed.reasons),
            )
        if unconfirmed.queue_missing:
            # The queue is gone; reconnecting declares the topology again.
            self._reset("work queue missing")
