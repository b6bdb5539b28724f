"""``python -m consumer replay-dead [--limit N]``: dead letters back onto the work queue.

Each dead letter is republished (persistent, with a publisher confirm) and only then removed from
the dead-letter queue, so a crash in between duplicates one message rather than losing it.
Exhausted ids come back with a fresh set of attempts. It moves at most the number of dead letters
present when it starts, so a letter that dies again meanwhile is not replayed in a loop.

The broker is chosen here, once, from ``BROKER``: RabbitMQ's ``q.dead`` queue below, Pub/Sub's
``q.dead`` subscription in :mod:`consumer.replay_pubsub` (imported only when chosen).
"""

from __future__ import annotations

import aio_pika
import structlog

from common.amqp import Topology, connect_amqp, declare_topology
from common.broker.settings import BrokerSettings
from common.messages import CONTENT_TYPE
from consumer.dead_letter import replayable

log = structlog.get_logger("consumer")


class ReplaySettings(BrokerSettings):
    """What ``replay-dead`` needs: only the broker (no database, no status API)."""


async def replay_dead(settings: ReplaySettings, limit: int | None = None) -> int:
    """Move up to ``limit`` dead letters (all, if None) to the work queue; return how many."""
    if settings.broker == "pubsub":
        from consumer.replay_pubsub import replay_dead_pubsub

        return await replay_dead_pubsub(
            settings.pubsub,
            settings.pubsub_topology,
            startup_timeout=settings.startup_timeout,
            limit=limit,
        )
    return await _replay_rabbitmq(settings, limit)


async def _replay_rabbitmq(settings: ReplaySettings, limit: int | None) -> int:
    topology = Topology(settings.queue_name)
    connection = await connect_amqp(
        settings.amqp_uri,
        connection_name="lastseen-replay",
        deadline=settings.startup_timeout,
        ssl_context=settings.amqp_ssl_context(),
    )
    moved = 0
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await declare_topology(channel, settings.queue_name)
        dead = await channel.get_queue(topology.dead, ensure=False)
        present = (await dead.declare()).message_count or 0
        budget = present if limit is None else min(limit, present)
        while moved < budget:
            letter = await dead.get(no_ack=False, fail=False)
            if letter is None:
                break
            body = replayable(letter.body, dict(letter.headers or {}))
            await channel.default_exchange.publish(
                aio_pika.Message(
                    body,
                    content_type=CONTENT_TYPE,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=topology.work,
                mandatory=True,
            )
            await letter.ack()
            moved += 1
    finally:
        await connection.close()
    # The command's answer, for the operator (a log line is the service's only output channel).
    log.info("dead_letters_replayed", moved=moved, queue=topology.dead, to=topology.work)
    return moved
