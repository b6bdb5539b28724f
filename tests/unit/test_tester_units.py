"""The tester's pure parts: id picking, delays, faults, id parsing, knobs, ledger, stats, settings.

(Its ``Tester*`` classes are reached through their modules so pytest does not take them for tests.)
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from random import Random
from typing import Any

import pytest
from pydantic import ValidationError

from common.settings import describe_errors
from tester import settings as tester_settings
from tester import state as tester_state
from tester.callbacks import next_tick
from tester.choices import (
    INT64_MAX,
    INT64_MIN,
    Fault,
    FaultRates,
    choose_delay,
    choose_fault,
    garbage_body,
    object_body,
    parse_object_id,
    pick_ids,
)
from tester.knobs import InvalidControl, Knobs, apply_control
from tester.ledger import CallbackRecord, Ledger
from tester.stats import ObjectStats
from tests.support.tester import is_valid_answer

pytestmark = pytest.mark.unit


def settings(**values: Any) -> tester_settings.TesterSettings:
    values.setdefault("callback_endpoint", "http://127.0.0.1:9")
    return tester_settings.TesterSettings(_env_file=None, **values)


def test_pick_ids_draws_counts_and_ids_as_the_original() -> None:
    rng = Random(1)
    draws = [pick_ids(rng, id_range=100, max_ids=199) for _ in range(2000)]
    counts = [len(ids) for ids in draws]
    assert min(counts) == 0
    assert max(counts) == 199
    every_id = [object_id for ids in draws for object_id in ids]
    assert set(every_id) == set(range(100))
    assert any(len(set(ids)) < len(ids) for ids in draws), "repeats are kept, as rand.Intn gives"


def test_pick_ids_is_reproducible_from_a_seed() -> None:
    first = [pick_ids(Random(7), 10, 5) for _ in range(3)]
    assert first == [pick_ids(Random(7), 10, 5) for _ in range(3)]
    assert pick_ids(Random(7), 1000, 50) != pick_ids(Random(8), 1000, 50)


def test_seeded_state_sends_the_same_callbacks_whatever_the_status_traffic() -> None:
    one = tester_state.TesterState.from_settings(settings(tester_seed=42))
    two = tester_state.TesterState.from_settings(settings(tester_seed=42))
    for _ in range(50):
        choose_delay(two.object_rng, 0, 1)  # status requests in between must not shift callbacks
    assert [pick_ids(one.callback_rng, 100, 199) for _ in range(5)] == [
        pick_ids(two.callback_rng, 100, 199) for _ in range(5)
    ]


def test_choose_delay_stays_within_bounds_and_spreads() -> None:
    rng = Random(3)
    delays = [choose_delay(rng, 0.3, 4.3) for _ in range(5000)]
    assert all(0.3 <= delay <= 4.3 for delay in delays)
    assert min(delays) < 0.35 and max(delays) > 4.25
    assert choose_delay(rng, 1.0, 1.0) == 1.0


def test_choose_fault_follows_the_rates() -> None:
    rng = Random(5)
    rates = FaultRates(error=0.2, hang=0.1, garbage=0.3)
    counts = Counter(choose_fault(rng, rates) for _ in range(20_000))
    assert counts[Fault.ERROR] / 20_000 == pytest.approx(0.2, abs=0.02)
    assert counts[Fault.HANG] / 20_000 == pytest.approx(0.1, abs=0.02)
    assert counts[Fault.GARBAGE] / 20_000 == pytest.approx(0.3, abs=0.02)
    assert counts[Fault.NONE] / 20_000 == pytest.approx(0.4, abs=0.02)
    assert {choose_fault(rng, FaultRates()) for _ in range(1000)} == {Fault.NONE}
    assert {choose_fault(rng, FaultRates(hang=1)) for _ in range(1000)} == {Fault.HANG}


@pytest.mark.parametrize("rates", [(1.1, 0, 0), (-0.1, 0, 0), (0.5, 0.4, 0.2)])
def test_fault_rates_refuse_impossible_values(rates: tuple[float, float, float]) -> None:
    with pytest.raises(ValueError, match="rate"):
        FaultRates(*rates)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("7", 7),
        ("42", 42),
        ("+6", 6),
        ("-3", -3),
        ("007", 7),
        ("-0", 0),
        ("9223372036854775807", INT64_MAX),
        ("-9223372036854775808", INT64_MIN),
        ("000000000000000000000000000001", 1),
    ],
)
def test_parse_object_id_accepts_what_go_atoi_accepts(text: str, expected: int) -> None:
    assert parse_object_id(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "abc",
        "1.5",
        "1e3",
        " 1",
        "1 ",
        "1_000",
        "0x10",
        "+",
        "-",
        "--1",
        "1/2",
        "٣",  # an Arabic-Indic digit: int() takes it, Atoi does not
        "9223372036854775808",
        "-9223372036854775809",
        "9" * 5000,  # beyond Python's int() digit limit: must be a 400, not a crash
    ],
)
def test_parse_object_id_refuses_everything_else(text: str) -> None:
    assert parse_object_id(text) is None


@pytest.mark.parametrize("object_id", [0, 1, 2, 99, -1, -4, INT64_MAX, INT64_MIN])
def test_object_body_is_online_exactly_for_even_ids(object_id: int) -> None:
    body = object_body(object_id)
    assert json.loads(body) == {"id": object_id, "online": object_id % 2 == 0}
    assert is_valid_answer(body, object_id)


@pytest.mark.parametrize("object_id", [0, 1, 2, INT64_MAX])
def test_every_garbage_body_is_refused_by_a_strict_client(object_id: int) -> None:
    rng = Random(11)
    bodies = {garbage_body(rng, object_id) for _ in range(500)}
    assert len(bodies) == 10, "every variant is drawn"
    assert not [body for body in bodies if is_valid_answer(body, object_id)]


def test_next_tick_keeps_a_fixed_rate_and_drops_missed_ticks() -> None:
    assert next_tick(start=100.0, interval=5.0, due=105.0, now=105.0) == 110.0
    assert next_tick(start=100.0, interval=5.0, due=105.0, now=105.3) == 110.0
    assert next_tick(start=100.0, interval=5.0, due=105.0, now=117.3) == 120.0  # 110, 115 dropped


def test_next_tick_never_repeats_a_tick_after_an_early_wake_up() -> None:
    assert next_tick(start=100.0, interval=5.0, due=105.0, now=104.999) == 110.0
    assert next_tick(start=0.0, interval=0.05, due=0.15, now=0.15) > 0.15 + 0.04


def knobs() -> Knobs:
    return Knobs(delay_min=0.3, delay_max=4.3, rates=FaultRates())


def test_control_changes_only_what_is_given() -> None:
    changed = apply_control(knobs(), b'{"delay_min": "50ms", "delay_max": 0.15, "error_rate": 0.5}')
    assert (changed.delay_min, changed.delay_max) == (0.05, 0.15)
    assert changed.rates == FaultRates(error=0.5)
    assert changed.paused is False
    assert apply_control(changed, b'{"paused": true}') == Knobs(0.05, 0.15, FaultRates(0.5), True)


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        (b"", "body"),
        (b"not json", "Invalid JSON"),
        (b"[]", "body"),
        (b"null", "body"),
        (b'{"delay_min": "abc"}', "delay_min"),
        (b'{"delay_min": "-1s"}', "delay_min"),
        (b'{"error_rate": 2}', "error_rate"),
        (b'{"error_rate": "NaN"}', "error_rate"),
        (b'{"paused": "yes"}', "paused"),
        (b'{"paused": 1}', "paused"),
        (b'{"colour": "blue"}', "colour"),
        (b'{"delay_min": "5s"}', "delay_min"),  # above the current delay_max
        (b'{"error_rate": 0.6, "hang_rate": 0.6}', "rate"),
    ],
)
def test_control_refuses_garbage_whole(body: bytes, complaint: str) -> None:
    with pytest.raises(InvalidControl, match=complaint):
        apply_control(knobs(), body)


def record(seq: int, status: int | None = 200, error: str | None = None) -> CallbackRecord:
    return CallbackRecord(seq, datetime.now(UTC), [seq], status, error, 0.01)


def test_ledger_keeps_the_newest_records_and_counts_all() -> None:
    ledger = Ledger(size=3)
    for seq in range(1, 6):
        ledger.add(record(seq))
    assert [kept.seq for kept in ledger.records()] == [3, 4, 5]
    assert [kept.seq for kept in ledger.records(after=4)] == [5]
    view = ledger.as_json()
    assert (view["total"], view["dropped"]) == (5, 2)
    assert view["records"][0]["object_ids"] == [3]


@pytest.mark.parametrize(
    ("status", "error", "ok"),
    [(200, None, True), (204, None, True), (503, None, False), (None, "timeout", False)],
)
def test_a_record_is_ok_only_for_a_2xx_answer(
    status: int | None, error: str | None, ok: bool
) -> None:
    shown = record(1, status, error).as_json()
    assert (shown["ok"], shown["status"], shown["error"]) == (ok, status, error)


def test_object_stats_track_peaks_overall_and_per_id_and_survive_a_reset() -> None:
    stats = ObjectStats()
    for object_id in (7, 7, 8):
        stats.started(object_id)
    stats.refused()
    stats.finished(7, Fault.NONE)
    shown = stats.as_json()
    assert (shown["requests"], shown["invalid"], shown["in_flight"]) == (4, 1, 2)
    assert shown["peak_in_flight"] == 3
    assert shown["per_id"] == {"7": 2, "8": 1}
    assert shown["per_id_peak_in_flight"] == {"7": 2, "8": 1}
    stats.reset()
    assert stats.as_json()["peak_in_flight"] == 2, "what is still in flight stays counted"
    stats.finished(7, None)
    stats.finished(8, Fault.ERROR)
    shown = stats.as_json()
    assert (shown["in_flight"], shown["gave_up"], shown["answered"]["error"]) == (0, 1, 1)
    assert shown["per_id_peak_in_flight"] == {"7": 1, "8": 1}


def test_settings_defaults_reproduce_the_original() -> None:
    loaded = settings(callback_endpoint="http://producer:9090/")
    assert loaded.callback_url == "http://producer:9090/callback"
    assert (loaded.tester_port, loaded.tester_interval, loaded.tester_callback_timeout) == (
        9010,
        5.0,
        1.0,
    )
    assert (loaded.tester_id_range, loaded.tester_max_ids) == (100, 199)
    assert (loaded.tester_delay_min, loaded.tester_delay_max) == (0.3, 4.3)
    assert loaded.tester_callbacks == 0


def test_every_setting_is_described() -> None:
    for name, field in tester_settings.TesterSettings.model_fields.items():
        assert field.description, name


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"tester_delay_min": "abc"}, "TESTER_DELAY_MIN"),
        ({"tester_delay_min": "2s", "tester_delay_max": "1s"}, "TESTER_DELAY_MAX"),
        ({"tester_error_rate": "2"}, "TESTER_ERROR_RATE"),
        ({"tester_error_rate": 0.5, "tester_hang_rate": 0.5, "tester_garbage_rate": 0.1}, "RATE"),
        ({"tester_interval": "0s"}, "TESTER_INTERVAL"),
        ({"tester_port": "70000"}, "TESTER_PORT"),
        ({"tester_id_range": "0"}, "TESTER_ID_RANGE"),
        ({"callback_endpoint": "producer:9090"}, "CALLBACK_ENDPOINT"),
    ],
)
def test_settings_name_the_bad_variable(values: dict[str, Any], named: str) -> None:
    with pytest.raises(ValidationError) as caught:
        settings(**values)
    assert named in describe_errors(caught.value)
