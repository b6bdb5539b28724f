"""How the Pub/Sub publisher reads the outcome of a callback's publishes (pure: no emulator)."""

from __future__ import annotations

import asyncio

import pytest
from google.api_core import exceptions

from common.messages import OutgoingMessage
from producer.pubsub_publisher import settle

pytestmark = pytest.mark.unit

MESSAGES = [OutgoingMessage(f"cb.{n}", b"{}") for n in range(3)]


async def answers(*outcomes: str | BaseException | None) -> list[asyncio.Future[str]]:
    """A message id (str), an error, or None: no answer by the deadline (cancelled)."""
    loop = asyncio.get_running_loop()
    made: list[asyncio.Future[str]] = []
    for outcome in outcomes:
        future: asyncio.Future[str] = loop.create_future()
        if outcome is None:
            future.cancel()
        elif isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
        made.append(future)
    return made


async def test_every_message_id_returned_is_published() -> None:
    unpublished = settle(MESSAGES, await answers("1", "2", "3"))
    assert unpublished.messages == [] and not unpublished.topic_missing
    assert unpublished.refused is None


async def test_a_late_or_failed_answer_leaves_that_message_to_the_spool() -> None:
    unpublished = settle(MESSAGES, await answers("1", None, exceptions.ServiceUnavailable("away")))
    assert unpublished.messages == MESSAGES[1:]
    assert "publish timeout" in unpublished.reasons
    assert any("ServiceUnavailable" in reason for reason in unpublished.reasons)
    assert not unpublished.topic_missing and unpublished.refused is None


async def test_a_missing_topic_asks_for_the_topology_again() -> None:
    unpublished = settle(MESSAGES[:1], await answers(exceptions.NotFound("topic")))
    assert unpublished.topic_missing and unpublished.messages == MESSAGES[:1]


@pytest.mark.parametrize("refusal", [exceptions.PermissionDenied, exceptions.Unauthenticated])
async def test_a_refusal_is_reported_for_the_service_to_stop(
    refusal: type[exceptions.GoogleAPICallError],
) -> None:
    error = refusal("no")
    unpublished = settle(MESSAGES[:2], await answers("1", error))
    assert unpublished.refused is error and unpublished.messages == MESSAGES[1:2]
