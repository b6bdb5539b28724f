"""``replay-dead`` on Pub/Sub: dead letters from the subscription ``q.dead`` to the topic ``q``.

Each letter pulled is republished (its body made replayable,
:func:`consumer.dead_letter.replayable`) and acked only once Pub/Sub confirmed the publish, so a
crash in between duplicates a letter rather than losing it. Pub/Sub cannot count a
subscription's backlog, so "the dead letters present when it starts" are those published before
it started: a newer one (a letter that died again meanwhile) ends the run and is given back
untouched.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import structlog
from google.api_core import exceptions as api_exceptions
from google.cloud import pubsub_v1

from common.broker.pubsub_topology import PubSubSettings, PubSubTopology
from common.messages import CONTENT_TYPE
from consumer.dead_letter import replayable
from consumer.pubsub import PUBLISH_TIMEOUT, close_clients, open_clients

log = structlog.get_logger("consumer")

PULL_BATCH = 100
PULL_TIMEOUT = 10.0


async def replay_dead_pubsub(
    settings: PubSubSettings,
    topology: PubSubTopology,
    *,
    startup_timeout: float,
    limit: int | None,
) -> int:
    """Move up to ``limit`` dead letters (all, if None) to the topic; return how many."""
    started = datetime.now(UTC)
    publisher, subscriber = await open_clients(
        settings,
        topology,
        startup_timeout=startup_timeout,
    )
    try:
        moved = await asyncio.to_thread(_replay, publisher, subscriber, topology, started, limit)
    finally:
        await asyncio.to_thread(close_clients, publisher, subscriber)
    log.info(
        "dead_letters_replayed",
        moved=moved,
        queue=topology.dead_subscription,
        to=topology.topic,
    )
    return moved


def _replay(
    publisher: pubsub_v1.PublisherClient,
    subscriber: pubsub_v1.SubscriberClient,
    topology: PubSubTopology,
    started: datetime,
    limit: int | None,
) -> int:
    moved = 0
    while limit is None or moved < limit:
        wanted = PULL_BATCH if limit is None else min(PULL_BATCH, limit - moved)
        try:
            # Pub/Sub answers a pull of an empty subscription with nothing after a while (the
            # emulator after ~1 s), or the deadline passes.
            response = subscriber.pull(
                request={"subscription": topology.dead_subscription, "max_messages": wanted},
                timeout=PULL_TIMEOUT,
            )
        except api_exceptions.DeadlineExceeded:
            return moved
        received = list(response.received_messages)
        if not received:
            return moved
        old = [r for r in received if r.message.publish_time < started]
        if len(old) < len(received):
            # Newer letters are given back for the next run (deadline 0: available at once).
            subscriber.modify_ack_deadline(
                request={
                    "subscription": topology.dead_subscription,
                    "ack_ids": [r.ack_id for r in received if r not in old],
                    "ack_deadline_seconds": 0,
                }
            )
        futures = [
            publisher.publish(
                topology.topic,
                replayable(r.message.data, dict(r.message.attributes)),
                content_type=CONTENT_TYPE,
            )
            for r in old
        ]
        for future in futures:
            future.result(timeout=PUBLISH_TIMEOUT)  # raises: the letters stay, for a rerun
        if old:
            subscriber.acknowledge(
                request={
                    "subscription": topology.dead_subscription,
                    "ack_ids": [r.ack_id for r in old],
                }
            )
        moved += len(old)
        if len(old) < len(received):
            return moved
    return moved
