"""One long-lived broker connection and confirm-mode channel, and confirmed publishing on it.

:meth:`Publisher.run` owns the connection: it connects in the background (start-up never waits for
the broker), declares the topology, and re-establishes both with backoff and jitter whenever the
connection or channel closes. Publishing never waits for a connection: without one, or while the
broker blocks publishers (resource alarm), or after a publish went unconfirmed, :attr:`accepting`
is false and callers spool instead. The relay's confirmed publishes close that circuit again.

How a message is published and confirmed, and how a broker alarm is noticed, is the business of
:mod:`producer.confirms` (``PUBLISH_MODE``): this module sees only its small interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import ssl
from collections.abc import Sequence
from enum import StrEnum

import aio_pika
import structlog

from common.amqp import CONNECT_ERRORS, TLS_HINT, declare_topology
from common.messages import OutgoingMessage
from common.nodes import connect_any, parse_amqp_nodes, shuffled
from common.retrying import retry_connect
from common.tls import certificate_refused, describe_refusal
from producer.confirms import ConfirmedPublisher, PublishMode, open_publisher

log = structlog.get_logger(__name__)


class BrokerState(StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    BLOCKED = "blocked"  # a broker resource alarm: publishes would stall, not fail
    DEGRADED = "degraded"  # a publish went unconfirmed; the relay probes until one succeeds
    STOPPED = "stopped"


class Publisher:
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
        self._degraded = False
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
        if self._degraded:
            return BrokerState.DEGRADED
        return BrokerState.CONNECTED

    @property
    def accepting(self) -> bool:
        """Whether a callback should be published directly rather than spooled."""
        return self.state is BrokerState.CONNECTED

    @property
    def connected(self) -> bool:
        return self.state in (BrokerState.CONNECTED, BrokerState.DEGRADED, BrokerState.BLOCKED)

    async def wait_connected(self) -> None:
        await self._connected.wait()

    def recovered(self) -> None:
        """The relay got confirms again: send callbacks straight to the broker."""
        if self._degraded:
            log.info("broker_recovered")
        self._degraded = False

    async def run(self) -> None:
        """Keep a connection and a confirm-mode channel open until :meth:`close`."""
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

    def close(self) -> None:
        """Make :meth:`run` close the connection and return."""
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
            confirms = await open_publisher(self._mode, channel, self._queue_name)
        except BaseException:
            with contextlib.suppress(*CONNECT_ERRORS, RuntimeError):
                await connection.close()
            raise
        self._lost.clear()
        connection.close_callbacks.add(self._on_close)
        channel.close_callbacks.add(self._on_close)
        self._channel = channel
        self._confirms = confirms
        self._degraded = False
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

    def reset(self, reason: str) -> None:
        """Drop the connection (it will be re-established): its confirms stopped arriving."""
        log.warning("broker_connection_reset", reason=reason)
        self._lost.set()

    async def publish(
        self, messages: Sequence[OutgoingMessage], confirm_timeout: float
    ) -> list[OutgoingMessage]:
        """Publish ``messages`` persistently; return those the broker did not confirm in time.

        An empty list means every message is confirmed. Anything else (no connection, a nack, a
        return because the queue is gone, a confirm later than ``confirm_timeout``) degrades the
        publisher, so that the next callbacks go to the spool without waiting.
        """
        channel, confirms = self._channel, self._confirms
        if channel is None or confirms is None or channel.is_closed:
            return list(messages)
        unconfirmed = await confirms.publish(messages, confirm_timeout)
        if unconfirmed.messages:
            if not self._degraded:
                log.warning(
                    "broker_degraded",
                    unconfirmed=len(unconfirmed.messages),
                    reasons=sorted(unconfirmed.reasons),
                )
            self._degraded = True
            if unconfirmed.queue_missing:
                # The queue is gone; reconnecting declares the topology again.
                self.reset("work queue missing")
        return unconfirmed.messages
