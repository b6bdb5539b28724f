"""The dead-letter format: what goes to ``q.dead``, and what ``replay-dead`` puts back.

A dead letter's **body is always a work message as it would be replayed**; what happened is in
its headers, so ``replay-dead`` needs no parsing beyond resetting the attempt counter:

* ``x-lastseen-dead``: ``exhausted`` (ids failed ``MAX_ATTEMPTS`` lookups; the body is a
  :class:`common.messages.IdsMessage` with those ids, their ``callback_id`` and ``attempt`` = the
  lookups made) or ``malformed`` (the body is the original bytes, which could not be decoded).
* ``x-lastseen-reason``: one line, e.g. ``http 500 (x3); timeout``.
* ``x-lastseen-errors``: JSON object id → reason of its last attempt (``exhausted`` only).
* ``x-lastseen-callback-id``, ``x-lastseen-ids`` (count), ``x-lastseen-attempts``,
  ``x-lastseen-dead-at`` (ISO 8601 UTC).

Each broker carries the headers its own way (:class:`consumer.broker.Letter`): RabbitMQ as
message headers, Pub/Sub as string attributes. Messages the broker itself dead-letters arrive
with their original body and the broker's marks (RabbitMQ's ``x-death`` header over the quorum
delivery limit, Pub/Sub's ``CloudPubSubDeadLetterSource*`` attributes over the subscription's
``max_delivery_attempts``); they replay the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import orjson

from common.messages import IdsMessage, MalformedMessage, decode_message
from consumer.broker import Letter
from consumer.ledger import summarize

KIND_HEADER = "x-lastseen-dead"
REASON_HEADER = "x-lastseen-reason"
ERRORS_HEADER = "x-lastseen-errors"
_MAX_REASON = 500
_MAX_ERRORS = 200


def exhausted_letter(work: IdsMessage, failures: dict[int, str]) -> Letter:
    """Ids that used up their attempts, with the reason each failed last."""
    ids = sorted(failures)
    attempts = work.attempt + 1
    body = IdsMessage(work.callback_id, work.received_at, ids, attempts).encode()
    errors = {str(i): failures[i] for i in ids[:_MAX_ERRORS]}
    return _letter(
        body,
        {
            KIND_HEADER: "exhausted",
            REASON_HEADER: summarize(failures)[:_MAX_REASON],
            ERRORS_HEADER: orjson.dumps(errors).decode(),
            "x-lastseen-callback-id": work.callback_id,
            "x-lastseen-ids": len(ids),
            "x-lastseen-attempts": attempts,
        },
    )


def malformed_letter(body: bytes, reason: str) -> Letter:
    """A message that can never be processed, kept byte for byte."""
    return _letter(body, {KIND_HEADER: "malformed", REASON_HEADER: reason[:_MAX_REASON]})


def _letter(body: bytes, headers: dict[str, str | int]) -> Letter:
    headers["x-lastseen-dead-at"] = datetime.now(UTC).isoformat()
    return Letter(body, headers)


def replayable(body: bytes, headers: Mapping[str, object]) -> bytes:
    """The body to put back on the work queue for a dead letter: exhausted ids get a fresh set
    of attempts; anything else goes back unchanged."""
    if headers.get(KIND_HEADER) != "exhausted":
        return body
    try:
        work = decode_message(body)
    except MalformedMessage:
        return body
    return IdsMessage(work.callback_id, work.received_at, work.ids, 0).encode()
