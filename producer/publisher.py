"""One long-lived broker connection and confirm-mode channel, and confirmed publishing on it.

:meth:`Publisher.run` owns the connection: it connects in the background (start-up never waits for
the broker), declares the topology, and re-establishes both with backoff and jitter whenever the
connection or channel closes. Publishing never waits for a connection: without one, or while the
broker blocks publishers (resource alarm), or after a publish went unconfirmed, :attr:`accepting`
is false and callers spool instead. The relay's confirmed publishes close that circuit again.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import ssl
from collections.abc import Sequence
from enum import StrEnum

import aio_pika
import aiormq
import structlog
from aiormq.abc import AbstractConnection as AmqpConnection
from pamqp import commands as spec

from common.amqp import CONNECT_ERRORS, TLS_HINT, declare_topology
from common.messages import OutgoingMessage
from common.nodes import connect_any, parse_amqp_nodes, shuffled
from common.retrying import retry_connect
from common.tls import certificate_refused, describe_refusal
from producer.pipeline import ConfirmPipeline

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
        self._connection_name = connection_name
        self._channel: aiormq.Channel | None = None
        self._pipeline: ConfirmPipeline | None = None
        self._lost = asyncio.Event()
        self._connected = asyncio.Event()
        self._degraded = False
        self._stopped = False

    @property
    def state(self) -> BrokerState:
        channel = self._channel
        if self._stopped:
            return BrokerState.STOPPED
        if channel is None or channel.is_closed:
            return BrokerState.CONNECTING
        if _is_blocked(channel.connection):
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
                if self._pipeline is not None:
                    self._pipeline.close()
                    self._pipeline = None
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
            underlay = await channel.get_underlay_channel()
            if not isinstance(underlay, aiormq.Channel):
                raise TypeError(f"unexpected channel type {type(underlay).__name__}")
        except BaseException:
            with contextlib.suppress(*CONNECT_ERRORS, RuntimeError):
                await connection.close()
            raise
        self._lost.clear()
        connection.close_callbacks.add(self._on_close)
        channel.close_callbacks.add(self._on_close)
        self._channel = underlay
        self._pipeline = ConfirmPipeline(underlay, self._queue_name)
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
        channel, pipeline = self._channel, self._pipeline
        if channel is None or pipeline is None or channel.is_closed:
            return list(messages)
        publishes = [pipeline.submit(message) for message in messages]
        _, pending = await asyncio.wait(publishes, timeout=confirm_timeout)
        failed: list[OutgoingMessage] = []
        reasons: set[str] = set()
        returned = False
        for message, publish in zip(messages, publishes, strict=True):
            if publish in pending:
                publish.cancel()
                reasons.add("confirm timeout")
            elif publish.cancelled():
                reasons.add("cancelled: channel closed")
            elif (error := publish.exception()) is not None:
                reasons.add(repr(error))
            elif isinstance(publish.result(), spec.Basic.Ack):
                continue
            else:
                returned = True
                reasons.add(f"returned unroutable: no queue {self._queue_name!r}")
            failed.append(message)
        if failed:
            if not self._degraded:
                log.warning("broker_degraded", unconfirmed=len(failed), reasons=sorted(reasons))
            self._degraded = True
            if returned:
                # The queue is gone; reconnecting declares the topology again.
                self.reset("work queue missing")
        return failed


def _is_blocked(connection: AmqpConnection) -> bool:
    # aiormq records Connection.Blocked/Unblocked (a broker memory or disk alarm) in a private
    # event and has no public flag for it; without it we would learn of the alarm only through
    # confirm timeouts, one PUBLISH_TIMEOUT per callback.
    unblocked = getattr(connection, "_Connection__connection_unblocked", None)
    return isinstance(unblocked, asyncio.Event) and not unblocked.is_set()
