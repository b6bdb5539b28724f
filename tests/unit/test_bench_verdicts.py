"""The benchmark's verdict rule and the depth of tail it reports (bench/verdicts.py)."""

from __future__ import annotations

import math

import pytest

from bench.consumer_bench import ConsumerFigures, ConsumerRun
from bench.verdicts import (
    Spread,
    Verdict,
    at,
    common_quantile,
    judge,
    quantile,
    supported_quantile,
    tail,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("samples", "expected"),
    [
        (0, None),
        (39, None),
        (40, 0.5),
        (199, 0.5),
        (200, 0.9),
        (400, 0.95),
        (1999, 0.95),
        (2000, 0.99),
        (50_000, 0.99),
    ],
)
def test_a_tail_is_only_as_deep_as_its_samples_support(
    samples: int, expected: float | None
) -> None:
    assert supported_quantile(samples) == expected


def test_a_p99_of_two_hundred_samples_is_not_reported_as_one() -> None:
    # The case: 200 upserts, one slow by a scheduler hiccup.
    values = [0.010] * 198 + [0.020, 0.500]
    reported = tail(values)
    assert reported.name == "p90"
    assert reported.value == pytest.approx(0.010)
    assert reported.samples == 200
    assert "n=200" in reported.label(1000, " ms")


def test_too_few_samples_give_no_tail_and_say_so() -> None:
    reported = tail([1.0] * 10)
    assert reported.q is None
    assert math.isnan(reported.value)
    assert "too few" in reported.label()


def test_quantile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert quantile(values, 0.99) == 99
    assert quantile(values, 0.5) == 50
    assert quantile(values, 1.0) == 100
    assert math.isnan(quantile([], 0.5))


def test_observations_one_stall_moves_together_count_as_one() -> None:
    # 12 writers flushing every 50 ms for 20 s: 4,800 commit latencies, 400 stalls observed.
    assert common_quantile([[1.0] * 4800]) == 0.99
    assert common_quantile([[1.0] * 4800], together=12) == 0.95
    assert common_quantile([[1.0] * 4799], together=12) == 0.9


def test_windows_compared_with_each_other_share_one_quantile() -> None:
    small, large = [1.0] * 450, [1.0] * 5000
    q = common_quantile([small, large])
    assert q == 0.95
    assert at(small, q).name == at(large, q).name == "p95"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ((0.5, 0.9, 1.1), Verdict.MET),  # every repeat within 2x
        ((2.66, 2.51, 0.68), Verdict.AT_THE_LINE),  # the three runs: no verdict holds
        ((2.1, 3.0, 2.5), Verdict.MISSED),
        ((2.0,), Verdict.ONE_RUN),  # a single run is no verdict, even when it meets
        ((), Verdict.UNKNOWN),
    ],
)
def test_the_verdict_follows_the_whole_range(values: tuple[float, ...], expected: Verdict) -> None:
    assert judge(Spread(values), 2.0, at_most=True) is expected


def test_a_rate_target_is_met_from_above() -> None:
    assert judge(Spread((0.61, 0.63, 0.6)), 0.6, at_most=False) is Verdict.MET
    assert judge(Spread((0.54, 0.61, 0.58)), 0.6, at_most=False) is Verdict.AT_THE_LINE


def test_spread_gives_median_and_range_and_drops_missing_repeats() -> None:
    spread = Spread.of([3.0, math.nan, 1.0, 2.0])
    assert (spread.median, spread.low, spread.high, spread.repeats) == (2.0, 1.0, 3.0, 3)
    times, dash = "\N{MULTIPLICATION SIGN}", "\N{EN DASH}"
    assert spread.label(1, times) == f"2.0{times} (1.0{dash}3.0, 3 runs)"
    assert Spread.of([]).label() == dash


def test_consumer_cost_is_split_into_parts_of_the_window() -> None:
    figures = ConsumerFigures(ConsumerRun(), window=6.0)
    # one point a second: (t, CPU seconds so far, ids served so far)
    figures.cpu_timeline = [(float(t), 0.1 * t * (1 + (t > 3)), 1000 * t) for t in range(7)]
    parts = figures.cpu_ms_per_id_by_part(2)
    assert parts == pytest.approx([0.1, (0.1 * 6 * 2 - 0.1 * 3) / 3000 * 1000])


def test_overhead_is_split_by_when_the_callback_arrived() -> None:
    figures = ConsumerFigures(ConsumerRun(), window=6.0)
    figures.overhead = [0.01, 0.02, 0.03, 0.04]
    figures.overhead_at = [0.5, 2.9, 3.1, 7.0]  # the last one after the window: left out
    assert figures.overhead_by_part(2) == [[0.01, 0.02], [0.03]]
