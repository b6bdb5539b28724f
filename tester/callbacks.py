"""The callback loop: every interval, POST a random set of ids to the producer, as the original."""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime

import httpx
import orjson
import structlog

from tester.choices import pick_ids
from tester.ledger import CallbackRecord
from tester.signing import CallbackSigner
from tester.state import TesterState

log = structlog.get_logger()


def next_tick(start: float, interval: float, due: float, now: float) -> float:
    """The tick after the one ``due``, on the fixed grid ``start + k * interval``.

    As Go's ``time.Tick``: when a send outlasts the interval, the next callback goes right after it
    (Go's ticker buffers one tick); ticks missed beyond that are dropped, not made up in a burst.
    Never ``due`` itself, even when the timer woke a hair early.
    """
    past = start + (math.floor((now - start) / interval) + 1) * interval
    return max(due + interval, past)


async def post_callback(
    client: httpx.AsyncClient,
    url: str,
    object_ids: list[int],
    within: float,
    signer: CallbackSigner | None = None,
) -> tuple[int | None, str | None]:
    """``(status, None)`` when an answer came ``within`` seconds, else ``(None, why)``.

    ``within`` bounds the whole exchange, like Go's ``http.Client.Timeout``; httpx's own timeouts
    are per phase, so the deadline is asyncio's.
    """
    body = orjson.dumps({"object_ids": object_ids})
    headers = {"Content-Type": "application/json"}
    if signer is not None:
        headers.update(signer.headers(body))
    try:
        async with asyncio.timeout(within):
            response = await client.post(url, content=body, headers=headers)
    except TimeoutError:
        return None, f"timeout: no answer within {within:g}s"
    except Exception as error:  # noqa: BLE001 - one callback is the unit of work: record, go on
        return None, f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return response.status_code, None


async def send_one(state: TesterState, client: httpx.AsyncClient, seq: int) -> CallbackRecord:
    """Draw, send and record one callback; never raises for a failed send."""
    settings = state.settings
    object_ids = pick_ids(state.callback_rng, settings.tester_id_range, settings.tester_max_ids)
    sent_at = datetime.now(UTC)
    started = time.perf_counter()
    status, error = await post_callback(
        client,
        settings.callback_url,
        object_ids,
        settings.tester_callback_timeout,
        CallbackSigner(settings.signing_keys, settings.callback_bearer_token),
    )
    record = CallbackRecord(
        seq=seq,
        sent_at=sent_at,
        object_ids=object_ids,
        status=status,
        error=error,
        latency=time.perf_counter() - started,
    )
    state.ledger.add(record)
    state.callbacks.record(record.ok)
    state.metrics.sent(record)
    fields = {"seq": seq, "ids": len(object_ids), "latency_ms": round(record.latency * 1000, 1)}
    if record.ok:
        log.info("callback_sent", status=status, **fields)
    else:
        log.warning("callback_failed", status=status, error=error, **fields)
    return record


async def run_callbacks(state: TesterState, client: httpx.AsyncClient) -> None:
    """Send a callback every ``TESTER_INTERVAL`` (the first one interval after start) until
    ``TESTER_CALLBACKS`` were sent, or forever when that is 0. Skips ticks while paused."""
    settings = state.settings
    interval, limit = settings.tester_interval, settings.tester_callbacks
    loop = asyncio.get_running_loop()
    start = loop.time()
    due = start + interval
    sent = 0
    while limit == 0 or sent < limit:
        await asyncio.sleep(max(0.0, due - loop.time()))
        due = next_tick(start, interval, due, loop.time())
        if state.knobs.paused:
            continue
        sent += 1
        await send_one(state, client, seq=sent)
    log.info("callbacks_finished", sent=sent)
