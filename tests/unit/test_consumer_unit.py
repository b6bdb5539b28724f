"""Pure parts of the consumer: backoff tiers, settling, single-flight, answer parsing, formats."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.contextvars import get_contextvars, merge_contextvars
from structlog.testing import capture_logs

from common.amqp import DELIVERY_LIMIT, RETRY_TIERS_MS
from common.backoff import exponential
from common.broker.pubsub_topology import DELIVERY_ATTEMPTS
from common.messages import IdsMessage, decode_message
from common.settings import describe_errors
from consumer.backoff import RetryPlan, RetryPolicy, plan_retry, retry_tiers, tier_for
from consumer.batch_writer import BatchWriter
from consumer.broker import Letter
from consumer.dead_letter import (
    ERRORS_HEADER,
    KIND_HEADER,
    REASON_HEADER,
    exhausted_letter,
    malformed_letter,
    replayable,
)
from consumer.ledger import Delivery, Next, exhausted, summarize
from consumer.rabbitmq import amqp_letter
from consumer.retry import retry_message
from consumer.settings import ConsumerSettings
from consumer.single_flight import Flights
from consumer.status import StatusFailure, parse_status
from consumer.subscription import looks_stuck, needs_resize, prefetch_for
from consumer.worker import Worker
from tests.support.processes import PROJECT_ROOT
from tests.support.waiting import eventually

pytestmark = pytest.mark.unit

WORK = IdsMessage("cb-1", datetime(2026, 1, 1, tzinfo=UTC), [1, 2, 3], attempt=2)


# --- backoff -----------------------------------------------------------------------------------


def test_tiers_cover_base_to_max() -> None:
    assert retry_tiers(1.0, 60.0) == (1000, 2000, 4000, 8000, 16000, 32000, 64000)
    assert retry_tiers(0.25, 0.25) == (250,)
    assert tier_for(300) == 500
    assert tier_for(10**9) == RETRY_TIERS_MS[-1]


@given(
    failures=st.integers(1, 40),
    base=st.floats(0.01, 10.0),
    span=st.floats(1.0, 50.0),
    seed=st.integers(0, 2**32),
)
def test_retry_plan_is_jittered_within_its_tier(
    failures: int, base: float, span: float, seed: int
) -> None:
    maximum = min(base * span, 512.0)
    plan = plan_retry(failures, base, maximum, random.Random(seed))
    nominal_ms = exponential(failures, base, maximum) * 1000
    assert plan.tier_ms in retry_tiers(base, maximum)
    assert 1 <= plan.expiration_ms <= plan.tier_ms
    assert nominal_ms / 2 - 1 <= plan.expiration_ms <= nominal_ms + 1


def test_jitter_spreads_ids_that_failed_together() -> None:
    rng = random.Random(7)
    draws = {plan_retry(3, 1.0, 60.0, rng).expiration_ms for _ in range(50)}
    assert len(draws) > 25
    assert min(draws) >= 2000 and max(draws) <= 4000


# --- settling ----------------------------------------------------------------------------------


def test_message_acks_only_after_every_online_row_is_stored() -> None:
    delivery = Delivery("tag", WORK)
    delivery.answered_online()
    delivery.answered_offline()
    assert delivery.next_step() is Next.WAIT  # one lookup still out
    delivery.answered_online()
    assert delivery.next_step() is Next.WAIT  # two rows not committed
    delivery.stored()
    assert delivery.next_step() is Next.WAIT
    delivery.stored()
    assert delivery.next_step() is Next.ACK
    assert delivery.next_step() is Next.WAIT  # ACK is given once


def test_failures_are_handed_off_once_before_the_ack() -> None:
    delivery = Delivery("tag", WORK)
    delivery.failed(1, "timeout")
    delivery.answered_online()
    assert delivery.next_step() is Next.WAIT
    delivery.failed(3, "http 500")
    assert delivery.next_step() is Next.HAND_OFF
    assert delivery.next_step() is Next.WAIT  # hand-off under way
    delivery.hand_off_done()
    assert delivery.next_step() is Next.WAIT  # row 2 not stored yet
    delivery.stored()
    assert delivery.next_step() is Next.ACK
    assert delivery.failures == {1: "timeout", 3: "http 500"}


def test_empty_message_acks_at_once() -> None:
    delivery = Delivery("tag", IdsMessage("cb", WORK.received_at, []))
    assert delivery.next_step() is Next.ACK


def test_attempts_run_out_at_max_attempts() -> None:
    assert not exhausted(0, 2)
    assert exhausted(1, 2)
    assert exhausted(0, 1)


def test_summary_ranks_reasons() -> None:
    failures = {1: "timeout", 2: "timeout", 3: "http 500", 4: "a", 5: "b"}
    assert summarize(failures) == "timeout (x2); a; b; +1 other reasons"


# --- single-flight -----------------------------------------------------------------------------


def test_overlapping_lookups_share_one_flight() -> None:
    flights: Flights[str] = Flights()
    assert flights.join(7, "a") is True
    assert flights.join(7, "b") is False
    assert flights.join(8, "c") is True
    assert len(flights) == 2
    assert flights.land(7) == ["a", "b"]
    assert 7 not in flights
    assert flights.join(7, "d") is True  # a later lookup asks again
    assert flights.land(99) == []


# --- status answers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "online"),
    [(200, b'{"id":4,"online":true}', True), (200, b'{"online":false,"id":4,"x":1}', False)],
)
def test_valid_answers(status: int, body: bytes, online: bool) -> None:
    assert parse_status(4, status, body) is online


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (500, b'{"id":4,"online":true}', "http 500"),
        (404, b"", "http 404"),
        (200, b"<html>", "bad body: not JSON"),
        (200, b"", "bad body: not JSON"),
        (200, b"[4, true]", "bad body: not a JSON object"),
        (200, b'{"id":"4","online":true}', "bad body: id is not an integer"),
        (200, b'{"id":true,"online":true}', "bad body: id is not an integer"),
        (200, b'{"id":4.0,"online":true}', "bad body: id is not an integer"),
        (200, b'{"online":true}', "bad body: id is not an integer"),
        (200, b'{"id":5,"online":true}', "wrong id: asked 4, answered 5"),
        (200, b'{"id":4,"online":1}', "bad body: online is not a boolean"),
        (200, b'{"id":4,"online":"true"}', "bad body: online is not a boolean"),
        (200, b'{"id":4}', "bad body: online is not a boolean"),
    ],
)
def test_unusable_answers_are_failures(status: int, body: bytes, reason: str) -> None:
    with pytest.raises(StatusFailure) as caught:
        parse_status(4, status, body)
    assert caught.value.reason == reason


# --- prefetch ----------------------------------------------------------------------------------


def test_prefetch_keeps_max_consumers_busy() -> None:
    assert prefetch_for(2000, 100) == 50
    assert prefetch_for(2000, 1) == 5000
    assert prefetch_for(8000, 0) == 20000
    assert prefetch_for(10, 500) == 4
    assert prefetch_for(50_000, 1) == 65_535
    assert not needs_resize(50, 60)
    assert needs_resize(50, 5000)
    assert needs_resize(5000, 50)


def test_watchdog_suspects_only_unexplained_silence() -> None:
    assert looks_stuck(idle=31, interval=30, paused=False, unacked=0, prefetch=50)
    assert not looks_stuck(idle=10, interval=30, paused=False, unacked=0, prefetch=50)
    assert not looks_stuck(idle=31, interval=30, paused=True, unacked=0, prefetch=50)
    assert not looks_stuck(idle=31, interval=30, paused=False, unacked=50, prefetch=50)


# --- formats -----------------------------------------------------------------------------------


def test_exhausted_letter_carries_reason_ids_callback_and_attempts() -> None:
    letter = exhausted_letter(WORK, {3: "timeout", 1: "http 500"})
    body = decode_message(letter.body)
    assert body.ids == [1, 3]
    assert body.callback_id == "cb-1"
    assert body.attempt == 3
    assert letter.headers[KIND_HEADER] == "exhausted"
    assert letter.headers[REASON_HEADER] == "http 500; timeout"
    assert orjson.loads(str(letter.headers[ERRORS_HEADER])) == {"1": "http 500", "3": "timeout"}
    assert letter.headers["x-lastseen-callback-id"] == "cb-1"
    assert letter.headers["x-lastseen-attempts"] == 3
    assert amqp_letter(letter).delivery_mode == 2


def test_replay_resets_attempts_and_keeps_other_bodies() -> None:
    letter = exhausted_letter(WORK, {2: "timeout"})
    replayed = decode_message(replayable(letter.body, dict(letter.headers)))
    assert (replayed.ids, replayed.attempt, replayed.callback_id) == ([2], 0, "cb-1")
    garbage = malformed_letter(b"\xff not json", "not JSON")
    assert garbage.headers[KIND_HEADER] == "malformed"
    assert replayable(garbage.body, dict(garbage.headers)) == b"\xff not json"
    # A broker dead-letter (delivery limit) has no header of ours: back unchanged.
    assert replayable(WORK.encode(), {"x-death": []}) == WORK.encode()
    assert replayable(b"junk", {KIND_HEADER: "exhausted"}) == b"junk"


def test_retry_message_counts_one_more_attempt() -> None:
    retry = IdsMessage(WORK.callback_id, WORK.received_at, [2, 3], WORK.attempt + 1)
    message = retry_message(retry, 1500)
    body = decode_message(message.body)
    assert (body.ids, body.attempt, body.callback_id) == ([2, 3], 3, "cb-1")
    assert body.received_at == WORK.received_at
    assert message.expiration == 1.5
    assert message.delivery_mode == 2


# --- settings ----------------------------------------------------------------------------------

BASE_ENV = {
    "AMQP_URI": "amqp://guest:guest@localhost:5672/",
    "QUEUE_NAME": "q",
    "POSTGRES_HOST": "db",
    "POSTGRES_DB": "d",
    "POSTGRES_USER": "u",
    "TESTER_ENDPOINT": "http://tester:9010",
}


def _settings(monkeypatch: pytest.MonkeyPatch, **extra: str) -> ConsumerSettings:
    for key, value in {**BASE_ENV, **extra}.items():
        monkeypatch.setenv(key, value)
    return ConsumerSettings(_env_file=None)  # type: ignore[call-arg]


def test_settings_defaults_and_durations(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(monkeypatch, RETRY_BASE_DELAY="500ms", BATCH_MAX_DELAY="20ms")
    assert settings.max_consumers == 2000
    assert settings.status_timeout == 10.0
    assert settings.retry_base_delay == 0.5
    assert settings.batch_max_delay == pytest.approx(0.02)
    assert settings.prefetch is None
    assert settings.status_base_url == "http://tester:9010"
    assert settings.status_client == "httptools"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TESTER_ENDPOINT", "tester:9010"),
        ("TESTER_ENDPOINT", "http://tester:9010/?x=1"),
        ("MAX_CONSUMERS", "0"),
        ("MAX_CONSUMERS", "many"),
        ("STATUS_TIMEOUT", "-1s"),
        ("RETRY_MAX_DELAY", "20m"),
        ("RETRY_BASE_DELAY", "2m"),
        ("MAX_ATTEMPTS", "0"),
        ("PREFETCH", "70000"),
        ("STATUS_CLIENT", "turbo"),
    ],
)
def test_bad_settings_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        _settings(monkeypatch, **{name: value})


def test_the_retired_fast_status_client_is_refused_naming_the_two_left(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as refused:
        _settings(monkeypatch, STATUS_CLIENT="fast")
    assert describe_errors(refused.value) == (
        "STATUS_CLIENT: fast was retired (it drove aiohttp internals; httptools is faster): "
        "use httptools (the default) or standard (got 'fast')"
    )


def test_the_default_status_client_is_httptools_and_takes_https(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert _settings(monkeypatch).status_client == "httptools"
    https = _settings(monkeypatch, TESTER_ENDPOINT="https://tester")
    assert https.status_base_url == "https://tester"


def test_every_setting_is_described() -> None:
    for name, field in ConsumerSettings.model_fields.items():
        assert field.description, name


class _FakeDelivery:
    """An AMQP delivery whose nack yields to the loop, as writing the frame does."""

    def __init__(self, ids: list[int]) -> None:
        self.body = IdsMessage("cb", datetime.now(UTC), ids).encode()
        self.message_id = "m"
        self.acked = self.nacked = False

    async def ack(self) -> None:
        self.acked = True

    async def nack(self, requeue: bool = True) -> None:
        await asyncio.sleep(0.01)  # the frame's drain: other tasks run meanwhile
        self.nacked = True


class _AllOffline:
    async def lookup(self, object_id: int) -> bool:
        await asyncio.sleep(0.005)
        return False

    async def close(self) -> None:
        pass


class _NoRows:
    def add(self, object_id: int, seen: datetime, owner: object) -> None:
        raise AssertionError("offline ids are never written")


class _NoHandOff:
    async def retry(self, work: IdsMessage, plan: RetryPlan) -> None:
        raise AssertionError("nothing fails, so nothing is retried")

    async def dead_letter(self, letter: Letter) -> None:
        raise AssertionError("nothing fails, so nothing is dead-lettered")


def _worker(max_in_flight: int = 1) -> Worker:
    return Worker(
        _AllOffline(),
        _NoRows(),
        _NoHandOff(),
        max_in_flight=max_in_flight,
        retry=RetryPolicy(max_attempts=3, base_delay=0.25, max_delay=0.5),
    )


async def test_drain_returns_unstarted_messages_even_while_lookups_finish() -> None:
    """Regression: a lookup finishing during a nack used to start a message drain was about to
    return, and drain died with ValueError instead of finishing the shutdown."""
    worker = _worker(max_in_flight=1)
    deliveries = [_FakeDelivery(ids) for ids in ([1, 2], [3], [4], [5])]
    for delivery in deliveries:
        await worker.on_message(delivery)

    await worker.drain(time.monotonic() + 5)
    await worker.wait_side_tasks(time.monotonic() + 5)

    assert deliveries[0].acked and not deliveries[0].nacked, "the started message finishes"
    assert all(d.nacked and not d.acked for d in deliveries[1:]), "the others go back"


class _AllFailing:
    async def lookup(self, object_id: int) -> bool:
        raise StatusFailure("http 500")

    async def close(self) -> None:
        pass


async def test_a_warning_while_settling_a_delivery_names_its_message_and_callback() -> None:
    routed: list[Letter] = []

    class Recording(_NoHandOff):
        async def dead_letter(self, letter: Letter) -> None:
            routed.append(letter)

    worker = Worker(
        _AllFailing(),
        _NoRows(),
        Recording(),
        max_in_flight=4,
        retry=RetryPolicy(max_attempts=1, base_delay=0.25, max_delay=0.5),
    )
    delivery = _FakeDelivery([7, 9])
    delivery.message_id = "m-7"
    with capture_logs(processors=[merge_contextvars]) as logs:
        await worker.on_message(delivery)
        await eventually(lambda: delivery.acked, timeout=5, what="dead-lettered, then acked")
        await worker.wait_side_tasks(time.monotonic() + 5)
    assert [letter.headers[KIND_HEADER] for letter in routed] == ["exhausted"]
    (dead,) = [entry for entry in logs if entry["event"] == "ids_dead_lettered"]
    assert dead["log_level"] == "warning"
    assert (dead["callback_id"], dead["message_id"], dead["ids"]) == ("cb", "m-7", 2)
    assert "message_id" not in get_contextvars(), "the binding ends with the delivery's task"


class _RefusingStore:
    name = "refusing"
    errors = (OSError,)

    async def write(self, latest: Mapping[int, datetime]) -> int:
        raise ConnectionRefusedError("the store is away")

    async def ping(self) -> None:
        raise ConnectionRefusedError("the store is away")

    async def count(self) -> int:
        return 0

    async def read(self, object_id: int) -> datetime | None:
        return None

    async def close(self) -> None:
        pass


class _Listener:
    def __init__(self) -> None:
        self.stored: list[int] = []
        self.health: list[bool] = []

    def on_stored(self, owners: list[int]) -> None:
        self.stored += owners

    def on_health(self, healthy: bool) -> None:
        self.health.append(healthy)


async def test_a_batch_writer_retries_a_failed_flush_after_the_common_backoff() -> None:
    """common.backoff's formula from 0.1 s, capped at ``max_backoff``: each wait in the upper half
    of its ceiling, so that consumers which lost the database together do not return together."""
    writer: BatchWriter[int] = BatchWriter(
        _RefusingStore(), max_rows=10, max_delay=0.001, max_backoff=0.4
    )
    listener = _Listener()
    with capture_logs() as logs:
        run = asyncio.create_task(writer.run(listener))
        writer.add(1, datetime.now(UTC), 1)

        def waits() -> list[float]:
            return [e["retry_in_s"] for e in logs if e["event"] == "flush_failed"]

        await eventually(lambda: len(waits()) >= 4, timeout=10, what="four failed flushes")
        writer.close(time.monotonic())
        await asyncio.wait_for(run, 5)
    ceilings = [exponential(n, 0.1, 0.4) for n in range(1, 5)]
    assert ceilings == [0.1, 0.2, 0.4, 0.4]
    assert all(c / 2 <= w <= c for w, c in zip(waits()[:4], ceilings, strict=True))


async def test_a_closed_batch_writer_gives_up_at_its_deadline_while_the_database_fails() -> None:
    writer: BatchWriter[int] = BatchWriter(_RefusingStore(), max_rows=10, max_delay=0.001)
    listener = _Listener()
    run = asyncio.create_task(writer.run(listener))
    writer.add(1, datetime.now(UTC), 1)
    await eventually(lambda: listener.health == [False], timeout=5, what="flush failed")
    with capture_logs() as logs:
        writer.close(time.monotonic() + 0.3)
        await asyncio.wait_for(run, 6)  # the backoff alone would retry for ever
    assert listener.stored == [], "nothing was committed, so nothing may be acked"
    assert writer.pending == 0
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["flush_abandoned"]


def test_the_status_interface_imports_no_http_library() -> None:
    """``consumer.status`` is the seam: each client brings its own HTTP library."""
    probe = (
        "import sys, consumer.status; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('aiohttp', 'httptools')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("modules", "imports_pubsub"),
    [
        ("consumer.__main__, consumer.service, consumer.replay, consumer.rabbitmq", False),
        ("consumer.pubsub", True),
    ],
)
def test_google_pubsub_is_imported_only_when_chosen(modules: str, imports_pubsub: bool) -> None:
    """With BROKER=rabbitmq the consumer and replay-dead import everything they run (the
    RabbitMQ side included) without Google's client library; the Pub/Sub side brings it."""
    probe = f"import sys, {modules}; print(any(m.startswith('google.cloud') for m in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert done.stdout.strip() == str(imports_pubsub)


def test_pubsubs_dead_letter_policy_is_rabbitmqs_delivery_limit_within_pubsubs_bounds() -> None:
    assert DELIVERY_ATTEMPTS == DELIVERY_LIMIT
    assert 5 <= DELIVERY_ATTEMPTS <= 100  # what the service accepts
