"""RabbitMQ: connecting with backoff, and the one topology every service declares.

Topology, derived from ``QUEUE_NAME`` (``q``):

* ``q`` — durable quorum work queue. Messages that exceed the delivery limit (a consumer keeps
  crashing on them) are dead-lettered to ``q.dead`` instead of being dropped.
* ``q.retry.<N>ms`` — one quorum delay queue per backoff tier. Nothing consumes them: messages wait
  ``N`` ms, expire and are dead-lettered back to ``q``.
* ``q.dead`` — durable quorum queue for messages that ran out of attempts or were malformed.

Queue arguments are a pure function of the queue name, so two services (or two versions) can
never declare the same queue with different arguments, which RabbitMQ refuses with a channel error.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import Any

import aiormq
from aio_pika.abc import AbstractChannel, AbstractQueue, AbstractRobustConnection
from yarl import URL

from common.nodes import FailoverConnection, connect_any, parse_amqp_nodes, shuffled
from common.retrying import DependencyUnavailable, retry_connect
from common.tls import certificate_refused, describe_refusal

# What to check when the broker's certificate is refused.
TLS_HINT = "check AMQP_TLS_CA and that AMQP_URI's host name is in the broker's certificate"

# What a publish, an ack or a channel operation raises when the broker or the channel is gone (the
# counterpart of common.db.DATABASE_ERRORS).
AMQP_ERRORS: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
    ConnectionError,
    TimeoutError,
)
# Connecting: the above, and any socket error on the way (refused, unreachable, reset).
CONNECT_ERRORS: tuple[type[BaseException], ...] = (OSError, *AMQP_ERRORS)
# aio-pika raises RuntimeError("Connection was not opened") for a channel asked for while the
# robust connection is reconnecting.
RECONNECTING_ERRORS: tuple[type[BaseException], ...] = (*AMQP_ERRORS, RuntimeError)
# aiormq rejects every pending future with CancelledError when it gives up on a stuck connection
# (a missed heartbeat): for a publish or an ack that is a broker failure, not a cancellation of the
# task awaiting it. Catch these, then ask cancelled_by_broker() before treating one as a failure.
SETTLE_ERRORS: tuple[type[BaseException], ...] = (*AMQP_ERRORS, asyncio.CancelledError)


def cancelled_by_broker(error: BaseException) -> bool:
    """False for a real cancellation of the current task (shutdown), which must propagate."""
    if not isinstance(error, asyncio.CancelledError):
        return True
    task = asyncio.current_task()
    return task is not None and task.cancelling() == 0


# 4.x defaults the quorum delivery limit to 20; 3.10 has none. Set it explicitly so the topology is
# the same on both. It only guards against poison messages that crash consumers: ordinary
# redeliveries (a consumer restart, a connection cut) stay far below it.
DELIVERY_LIMIT = 50

_QUORUM = {"x-queue-type": "quorum"}
# At-least-once dead-lettering (RabbitMQ >= 3.10) needs reject-publish overflow; with no length
# limit set, that overflow never triggers.
_SAFE_DEAD_LETTERING = {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}


@dataclass(frozen=True)
class Topology:
    """The names derived from one ``QUEUE_NAME``."""

    work: str

    @property
    def dead(self) -> str:
        return f"{self.work}.dead"

    def retry(self, delay_ms: int) -> str:
        return f"{self.work}.retry.{delay_ms}ms"

    def work_arguments(self) -> dict[str, Any]:
        return {
            **_QUORUM,
            **_SAFE_DEAD_LETTERING,
            "x-delivery-limit": DELIVERY_LIMIT,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.dead,
        }

    def retry_arguments(self, delay_ms: int) -> dict[str, Any]:
        return {
            **_QUORUM,
            **_SAFE_DEAD_LETTERING,
            "x-delivery-limit": DELIVERY_LIMIT,
            "x-message-ttl": delay_ms,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.work,
        }

    def dead_arguments(self) -> dict[str, Any]:
        return {**_QUORUM, "x-delivery-limit": DELIVERY_LIMIT}


async def declare_topology(
    channel: AbstractChannel, queue_name: str, retry_delays_ms: tuple[int, ...] = ()
) -> AbstractQueue:
    """Declare the work queue, the dead-letter queue and the given retry tiers; return the work
    queue. Idempotent: safe on every start of every service."""
    topology = Topology(queue_name)
    await channel.declare_queue(topology.dead, durable=True, arguments=topology.dead_arguments())
    for delay_ms in retry_delays_ms:
        await channel.declare_queue(
            topology.retry(delay_ms), durable=True, arguments=topology.retry_arguments(delay_ms)
        )
    return await channel.declare_queue(
        topology.work, durable=True, arguments=topology.work_arguments()
    )


# The first wait of a broker (re)connect, and the cap for the consumer and replay-dead, which
# have no setting for it: the default of the producer's BROKER_MAX_BACKOFF, so that every service
# comes back to a restarted broker within the same few seconds.
CONNECT_INITIAL_BACKOFF = 0.2
CONNECT_MAX_BACKOFF = 5.0


async def connect_amqp(
    uri: str,
    *,
    connection_name: str,
    deadline: float,
    max_backoff: float = CONNECT_MAX_BACKOFF,
    ssl_context: ssl.SSLContext | None = None,
) -> AbstractRobustConnection:
    """Open a robust connection, retrying with backoff for up to ``deadline`` seconds.

    After the first success aio-pika's robust connection re-establishes itself (and its channels,
    queues and consumers) while the broker is away, waiting the same backoff between attempts,
    at most ``max_backoff`` seconds (:class:`common.nodes.FailoverConnection`). ``uri`` may list
    several nodes of a cluster (see :mod:`common.nodes`): this process tries them in an order of
    its own and, when its node dies, reconnects to the next one. A refused TLS certificate is not
    retried: it raises :class:`DependencyUnavailable` at once.
    """
    nodes = shuffled(parse_amqp_nodes(uri))

    async def connect(node: str) -> AbstractRobustConnection:
        connection = FailoverConnection(
            URL(node),
            nodes=nodes,
            node_index=nodes.index(node),
            client_properties={"connection_name": connection_name},
            initial_backoff=CONNECT_INITIAL_BACKOFF,
            max_backoff=max_backoff,
            ssl_context=ssl_context,
        )
        try:
            await connection.connect(timeout=10)
        except BaseException as error:
            await connection.close()  # never connected: nothing of it may run on
            # not another node's business: every node presents the cluster's certificate
            raise_if_certificate_refused(error, f"rabbitmq ({connection_name})")
            raise
        return connection

    async def attempt() -> AbstractRobustConnection:
        _, connection = await connect_any(nodes, connect)
        return connection

    return await retry_connect(
        f"rabbitmq ({connection_name})",
        attempt,
        deadline=deadline,
        initial=CONNECT_INITIAL_BACKOFF,
        maximum=max_backoff,
    )


def raise_if_certificate_refused(error: BaseException, target: str) -> None:
    """A certificate verification failure is a configuration problem: waiting will not fix it."""
    refused = certificate_refused(error)
    if refused is not None:
        raise DependencyUnavailable(describe_refusal(target, refused, TLS_HINT)) from error


# The delay tiers a retry can wait in. Fixed, so that every deployment's retry queues have the
# same names and arguments; a consumer picks the tiers between its base and maximum delay.
RETRY_TIERS_MS: tuple[int, ...] = tuple(250 * 2**n for n in range(12))  # 250 ms … 512 s
