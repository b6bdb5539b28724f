"""The producer's rules, each alone: when it is degraded (BrokerHealth), when the relay pushes
(Relay on a real spool, with a stand-in for the broker side), what a callback does and how ready
the producer is (Ingest), and what the spool logs about a group commit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import structlog

from common.messages import OutgoingMessage, decode_message
from producer.broker_health import BrokerHealth
from producer.ingest import Ingest
from producer.relay import Relay
from producer.spool import Spool, SpoolUnavailable
from producer.view import BrokerState
from tests.support.spool import fill_disk
from tests.support.waiting import eventually

pytestmark = pytest.mark.unit


def message(n: int) -> OutgoingMessage:
    return OutgoingMessage(f"cb.{n}", f'{{"n": {n}}}'.encode())


@pytest.fixture
async def spool(tmp_path: Path) -> AsyncIterator[Spool]:
    async with Spool.opened(tmp_path / "spool.sqlite3") as opened:
        yield opened


# --- when the producer is degraded -----------------------------------------------------------


def test_an_unconfirmed_publish_degrades_once() -> None:
    health = BrokerHealth()
    assert not health.degraded
    assert health.publish_unconfirmed() is True
    assert health.publish_unconfirmed() is False  # already degraded: said once
    assert health.degraded


def test_a_confirmed_relay_round_an_empty_spool_or_a_new_connection_recover() -> None:
    for recover in (
        lambda health: health.relay_round(confirmed=True),
        lambda health: health.spool_empty(),
        lambda health: health.connection_opened(),
    ):
        health = BrokerHealth()
        health.publish_unconfirmed()
        recover(health)
        assert not health.degraded


def test_every_second_unconfirmed_relay_round_in_a_row_drops_the_connection() -> None:
    health = BrokerHealth()
    resets = [health.relay_round(confirmed=False) for _ in range(5)]
    assert resets == [False, True, False, True, False]
    health.relay_round(confirmed=True)  # the count starts again
    assert health.relay_round(confirmed=False) is False


def test_an_empty_spool_says_whether_it_recovered() -> None:
    health = BrokerHealth()
    assert health.spool_empty() is False
    health.publish_unconfirmed()
    assert health.spool_empty() is True


# --- when the relay pushes -------------------------------------------------------------------


@dataclass
class StandInBroker:
    """The broker side of the relay, answering as told."""

    answer: BrokerState = BrokerState.CONNECTED
    refuse: bool = False
    rounds: list[list[OutgoingMessage]] = field(default_factory=list)
    empty_reports: int = 0
    state_reads: int = 0
    _connected: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._connected.set()

    @property
    def state(self) -> BrokerState:
        self.state_reads += 1
        return self.answer

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        await self._connected.wait()

    async def publish_spooled(
        self, messages: Sequence[OutgoingMessage], confirm_timeout: float
    ) -> list[OutgoingMessage]:
        self.rounds.append(list(messages))
        return list(messages) if self.refuse else []

    def spool_empty(self) -> None:
        self.empty_reports += 1

    def published(self) -> list[OutgoingMessage]:
        return [m for batch in self.rounds if not self.refuse for m in batch]


def relay(spool: Spool, broker: StandInBroker, batch_size: int = 2) -> Relay:
    return Relay(
        spool,
        broker,
        batch_size=batch_size,
        publish_timeout=1.0,
        max_backoff=0.05,
        initial_backoff=0.01,
    )


async def test_the_relay_sends_what_is_appended_oldest_first_then_reports_an_empty_spool(
    spool: Spool,
) -> None:
    broker = StandInBroker()
    await spool.append([message(1), message(2), message(3)], "a")
    async with relay(spool, broker).running(drain_within=0):
        await eventually(lambda: broker.empty_reports >= 1, timeout=5, what="spool emptied")
        assert broker.rounds == [[message(1), message(2)], [message(3)]]
        assert spool.depth == 0
        # Woken by the spool itself when something new is committed.
        await spool.append([message(4)], "b")
        await eventually(lambda: spool.depth == 0, timeout=5, what="relayed again")
    assert broker.rounds[-1] == [message(4)]


async def test_the_relay_does_not_push_while_the_broker_blocks_publishers(spool: Spool) -> None:
    broker = StandInBroker(answer=BrokerState.BLOCKED)
    await spool.append([message(1)], "a")
    async with relay(spool, broker).running(drain_within=0):
        # The relay looked at the state several times, backing off in between.
        await eventually(lambda: broker.state_reads >= 4, timeout=5, what="relay rounds")
        assert broker.rounds == [] and spool.depth == 1
        broker.answer = BrokerState.CONNECTED
        await eventually(lambda: spool.depth == 0, timeout=5, what="relayed once unblocked")


async def test_unconfirmed_messages_stay_in_the_spool_and_are_sent_again(spool: Spool) -> None:
    broker = StandInBroker(refuse=True)
    await spool.append([message(1)], "a")
    async with relay(spool, broker).running(drain_within=0):
        await eventually(lambda: len(broker.rounds) >= 3, timeout=5, what="retried rounds")
        assert spool.depth == 1 and broker.empty_reports == 0
        broker.refuse = False
        await eventually(lambda: spool.depth == 0, timeout=5, what="confirmed at last")
    assert all(batch == [message(1)] for batch in broker.rounds)


async def test_leaving_the_relay_drains_the_spool_first(spool: Spool) -> None:
    broker = StandInBroker()
    async with relay(spool, broker, batch_size=500).running(drain_within=5):
        await spool.append([message(n) for n in range(50)], "a")
    assert spool.depth == 0
    assert [m for batch in broker.rounds for m in batch] == [message(n) for n in range(50)]


# --- a callback, and readiness ---------------------------------------------------------------


@dataclass
class StandInPublisher:
    accepting: bool = True
    connected: bool = True
    state: BrokerState = BrokerState.CONNECTED
    unconfirmed: bool = False
    published: list[OutgoingMessage] = field(default_factory=list)

    async def publish(
        self, messages: Sequence[OutgoingMessage], confirm_timeout: float
    ) -> list[OutgoingMessage]:
        self.published.extend(messages)
        return list(messages) if self.unconfirmed else []


async def test_a_callback_is_cut_into_messages_and_published(spool: Spool) -> None:
    publisher = StandInPublisher()
    ingest = Ingest(publisher, spool, ids_per_message=2, publish_timeout=0.1)
    accepted = await ingest.accept("c1", [5, 3, 5, 9])
    assert (accepted.accepted, accepted.spooled) == (3, False)
    assert [m.message_id for m in publisher.published] == ["c1.0", "c1.1"]
    assert [decode_message(m.body).ids for m in publisher.published] == [[5, 3], [9]]
    assert spool.depth == 0


@pytest.mark.parametrize(
    ("publisher", "tried"),
    [(StandInPublisher(accepting=False), 0), (StandInPublisher(unconfirmed=True), 1)],
    ids=["not accepting: not even tried", "unconfirmed"],
)
async def test_a_callback_the_broker_does_not_take_is_spooled(
    spool: Spool, publisher: StandInPublisher, tried: int
) -> None:
    ingest = Ingest(publisher, spool, ids_per_message=200, publish_timeout=0.1)
    accepted = await ingest.accept("c1", [1, 2])
    assert (accepted.accepted, accepted.spooled) == (2, True)
    assert [entry.message.message_id for entry in await spool.oldest(10)] == ["c1.0"]
    assert len(publisher.published) == tried


async def test_ready_while_the_broker_or_the_spool_can_take_a_callback(spool: Spool) -> None:
    publisher = StandInPublisher(accepting=False, connected=False, state=BrokerState.CONNECTING)
    ingest = Ingest(publisher, spool, ids_per_message=200, publish_timeout=0.1)
    assert ingest.readiness().ready  # the spool is writable
    await fill_disk(spool)
    with pytest.raises(SpoolUnavailable):
        await ingest.accept("c1", list(range(3000)))
    readiness = ingest.readiness()
    assert (readiness.ready, readiness.spool_writable) == (False, False)
    publisher.connected = True
    assert ingest.readiness().ready


# --- what the spool logs about a group commit ------------------------------------------------


async def test_a_failed_group_commit_names_every_callback_of_the_group(spool: Spool) -> None:
    await spool.append([message(0)], "first")
    await fill_disk(spool)
    big = [OutgoingMessage(f"big.{n}", b"x" * 8192) for n in range(20)]

    async def append_as(callback_id: str) -> BaseException | None:
        # As the HTTP layer does: the callback's id is bound while it is handled.
        structlog.contextvars.bind_contextvars(callback_id=callback_id)
        try:
            await spool.append(big, callback_id)
        except SpoolUnavailable as error:
            return error
        return None

    merged = [structlog.contextvars.merge_contextvars]  # as common/log.py configures it
    with structlog.testing.capture_logs(processors=merged) as logs:
        # Both queue behind one flush: the first starts the flusher, the second joins it.
        errors = await asyncio.gather(append_as("cb-a"), append_as("cb-b"))
    assert all(isinstance(error, SpoolUnavailable) for error in errors)
    failed = [entry for entry in logs if entry["event"] == "spool_write_failed"]
    assert len(failed) == 1
    assert failed[0]["callbacks"] == 2
    assert failed[0]["callback_ids"] == ["cb-a", "cb-b"]
    assert failed[0]["messages"] == 40
    assert "callback_id" not in failed[0]  # not the first caller's: the line is the group's
