"""Which connections the producer closes: past a deadline, and at the cap the least progress."""

from __future__ import annotations

import pytest

from common.settings import load_settings
from producer.connection_table import ConnectionTable, Stage
from producer.settings import ProducerSettings

pytestmark = pytest.mark.unit

HEAD_TIMEOUT, BODY_TIMEOUT = 10.0, 30.0


def table(capacity: int = 100) -> ConnectionTable[str]:
    return ConnectionTable(capacity, HEAD_TIMEOUT, BODY_TIMEOUT)


def served(connections: ConnectionTable[str], key: str, now: float) -> None:
    """One whole request answered: the connection is then idle, kept alive."""
    connections.request_begun(key, now)
    connections.head_complete(key, now)
    connections.request_complete(key, now)
    connections.response_complete(key, now)


def test_a_connection_moves_through_head_body_application_and_idle() -> None:
    connections = table()
    assert connections.opened("c", 0.0) == []
    assert connections.stage_of("c") is Stage.HEAD
    connections.request_begun("c", 0.5)
    connections.head_complete("c", 1.0)
    assert connections.stage_of("c") is Stage.BODY
    connections.request_complete("c", 1.5)
    assert connections.stage_of("c") is None  # the application has it
    connections.response_complete("c", 2.0)
    assert connections.stage_of("c") is Stage.IDLE
    connections.request_begun("c", 9.0)
    assert connections.stage_of("c") is Stage.HEAD
    connections.closed("c")
    assert len(connections) == 0


def test_at_the_cap_the_oldest_incomplete_head_goes_before_idle_and_bodies() -> None:
    connections = table(capacity=4)
    connections.opened("idle", 0.0)
    served(connections, "idle", 0.1)
    connections.opened("body", 0.2)
    connections.head_complete("body", 0.3)
    connections.opened("old-head", 1.0)
    connections.opened("young-head", 2.0)
    assert connections.opened("new", 3.0) == ["old-head"]
    assert connections.opened("newer", 3.1) == ["young-head"]
    assert connections.opened("newest", 3.2) == ["new"]


def test_without_other_incomplete_heads_the_longest_idle_goes_then_the_oldest_body() -> None:
    connections = table(capacity=4)
    for key, at in (("idle-long", 0.0), ("idle-short", 5.0)):
        connections.opened(key, at)
        served(connections, key, at)
    for key, at in (("body-old", 6.0), ("body-young", 6.5)):
        connections.opened(key, at)
        connections.head_complete(key, at)
    evicted = []
    for at, key in enumerate(("a", "b", "c", "d"), start=7):
        evicted += connections.opened(key, at)
        # Each newcomer sends its request at once; the application is still on it.
        connections.head_complete(key, at)
        connections.request_complete(key, at)
    assert evicted == ["idle-long", "idle-short", "body-old", "body-young"]


def test_the_newcomer_goes_only_when_everything_else_is_busy() -> None:
    connections = table(capacity=2)
    connections.opened("body", 0.0)
    connections.head_complete("body", 0.0)
    connections.opened("busy", 0.0)
    connections.head_complete("busy", 0.0)
    connections.request_complete("busy", 0.0)
    assert connections.opened("new", 1.0) == ["body"]
    connections.head_complete("new", 1.0)
    connections.request_complete("new", 1.0)
    assert connections.opened("newest", 2.0) == ["newest"]
    assert len(connections) == 2


def test_requests_in_the_application_are_never_evicted() -> None:
    connections = table(capacity=2)
    for key in ("busy-1", "busy-2"):
        connections.opened(key, 0.0)
        connections.head_complete(key, 0.0)
        connections.request_complete(key, 0.0)
    assert connections.opened("new", 1.0) == ["new"]
    assert len(connections) == 2


def test_a_head_past_its_deadline_expires_a_younger_one_does_not() -> None:
    connections = table()
    connections.opened("silent", 0.0)
    connections.opened("trickling", 5.0)
    connections.request_begun("trickling", 6.0)  # its deadline still runs from connecting
    connections.opened("prompt", 5.0)
    connections.head_complete("prompt", 5.1)
    assert connections.expired(9.9) == []
    assert connections.expired(10.0) == [("silent", Stage.HEAD)]
    assert connections.expired(15.0) == [("trickling", Stage.HEAD)]
    assert connections.expired(35.1) == [("prompt", Stage.BODY)]
    assert len(connections) == 0


def test_a_kept_alive_connection_gets_a_new_head_deadline_per_request() -> None:
    connections = table()
    connections.opened("c", 0.0)
    served(connections, "c", 1.0)
    assert connections.expired(100.0) == []  # idle: uvicorn's keep-alive timeout applies
    connections.request_begun("c", 100.0)
    assert connections.expired(109.0) == []
    assert connections.expired(110.0) == [("c", Stage.HEAD)]


def test_a_pipelined_request_behind_an_unanswered_one_is_left_alone() -> None:
    connections = table(capacity=1)
    connections.opened("c", 0.0)
    connections.head_complete("c", 0.0)
    connections.request_complete("c", 0.0)
    connections.request_begun("c", 0.1)
    connections.head_complete("c", 0.1)
    assert connections.stage_of("c") is None
    assert connections.expired(1000.0) == []
    connections.response_complete("c", 1.0)
    assert connections.stage_of("c") is Stage.BODY


def test_an_early_response_keeps_the_body_deadline_running() -> None:
    connections = table()
    connections.opened("c", 0.0)
    connections.head_complete("c", 1.0)
    connections.response_complete("c", 2.0)  # e.g. 413 before the body ended
    assert connections.stage_of("c") is Stage.BODY
    assert connections.expired(31.0) == [("c", Stage.BODY)]


def test_events_of_a_closed_or_evicted_connection_are_ignored() -> None:
    connections = table(capacity=1)
    connections.opened("gone", 0.0)
    connections.opened("new", 1.0)
    for event in (
        connections.request_begun,
        connections.head_complete,
        connections.request_complete,
        connections.response_complete,
    ):
        event("gone", 2.0)
    connections.closed("gone")
    assert len(connections) == 1


BASE = {"AMQP_URI": "amqp://guest:guest@127.0.0.1:5672/", "QUEUE_NAME": "q"}


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PRODUCER_HEADER_TIMEOUT", "0"),
        ("PRODUCER_HEADER_TIMEOUT", "soon"),
        ("PRODUCER_BODY_TIMEOUT", "-1s"),
        ("PRODUCER_MAX_CONNECTIONS", "5"),
        ("PRODUCER_MAX_CONNECTIONS", "lots"),
        ("PRODUCER_MAX_CONNECTIONS", "100000000"),  # beyond any open-file limit here
    ],
)
def test_a_bad_slow_client_setting_exits_2_with_one_line_naming_it(
    variable: str, value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, setting in {**BASE, variable: value}.items():
        monkeypatch.setenv(name, setting)
    with pytest.raises(SystemExit) as exited:
        load_settings(ProducerSettings, "producer", _env_file=None)
    assert exited.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("producer: configuration error: ")
    assert variable in lines[0]


def test_the_slow_client_settings_default_to_go_like_deadlines_and_a_derived_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, setting in BASE.items():
        monkeypatch.setenv(name, setting)
    settings = load_settings(ProducerSettings, "producer", _env_file=None)
    assert (settings.producer_header_timeout, settings.producer_body_timeout) == (10.0, 30.0)
    assert settings.max_connections == settings.connection_budget.default
    monkeypatch.setenv("PRODUCER_MAX_CONNECTIONS", "500")
    monkeypatch.setenv("PRODUCER_HEADER_TIMEOUT", "1m30s")
    settings = load_settings(ProducerSettings, "producer", _env_file=None)
    assert (settings.max_connections, settings.producer_header_timeout) == (500, 90.0)
