"""The benchmark's pure parts: commit times from snapshots, the profile summary, status delays,
section 8's ratio and the brokers the consumer bench refuses."""

from __future__ import annotations

import pytest

from bench.commit_clock import XID_MODULO, CommitClock, Snapshot
from bench.consumer_bench import Bench, ConsumerFigures, ConsumerRun, ServiceCost
from bench.consumer_status_server import status_delay
from bench.measure import MachineInfo
from bench.profile_summary import summarise
from bench.report import Results, pubsub_summary, pubsub_vs_rabbitmq

pytestmark = pytest.mark.unit


def clock(*snapshots: tuple[float, float, int, set[int]]) -> CommitClock:
    return CommitClock(
        snapshots=[
            Snapshot(sent, received, xmax, frozenset(xip))
            for sent, received, xmax, xip in snapshots
        ]
    )


def test_a_commit_lies_between_the_last_snapshot_running_it_and_the_first_not() -> None:
    c = clock((0.0, 1.0, 100, {98}), (2.0, 3.0, 105, {98, 103}), (4.0, 5.0, 110, set()))
    times = c.commit_times({98, 101, 103, 120})
    assert times[98] == (2.0, 5.0)  # in progress in the first two snapshots
    assert times[101] == (0.0, 3.0)  # not yet assigned in the first, finished in the second
    assert times[103] == (2.0, 5.0)
    assert 120 not in times  # finished after the last snapshot: unknown, left out


def test_32_bit_xmins_are_matched_across_an_epoch_boundary() -> None:
    c = clock((0.0, 1.0, XID_MODULO + 5, {XID_MODULO + 2}), (2.0, 3.0, XID_MODULO + 9, set()))
    times = c.commit_times({XID_MODULO - 3, 2})
    assert times[XID_MODULO - 3] == (float("-inf"), 1.0)  # the previous epoch: long finished
    assert times[2] == (0.0, 3.0)  # xid 2**32 + 2, running in the first snapshot


def test_status_delays_are_spread_over_the_range_and_fixed_per_id() -> None:
    delays = [status_delay(1_000_000_000 + i, 0.3, 4.3) for i in range(10_000)]
    assert min(delays) >= 0.3 and max(delays) < 4.3
    assert 2.25 < sum(delays) / len(delays) < 2.35  # uniform: mean 2.3 s
    assert status_delay(42, 0.3, 4.3) == status_delay(42, 0.3, 4.3)


def test_the_profile_is_charged_to_the_innermost_known_layer_and_idle_is_left_out() -> None:
    raw = "\n".join(
        [
            "run (consumer/__main__.py:10);lookup (/x/consumer/status_standard.py:5);"
            "data_received (/site-packages/aiohttp/client_proto.py:7);Py_DECREF (object.h:1) 6",
            "run (consumer/__main__.py:10);_commit (/x/consumer/batch_writer.py:9) 2",
            "run (consumer/__main__.py:10);uv__io_poll (linux.c:3) 50",
            "not a stack line",
        ]
    )
    summary = summarise(raw)
    assert (summary.samples, summary.idle_samples) == (8, 50)
    layers = dict(summary.layers)
    assert layers["HTTP client (aiohttp, yarl, multidict)"] == 6
    assert layers["consumer: batch writer"] == 2
    assert dict(summary.consumer_inclusive)["lookup (consumer/status_standard.py)"] == 6


def broker_pair(rabbitmq_ms: float, pubsub_ms: float) -> tuple[ConsumerFigures, ConsumerFigures]:
    pair = []
    for broker, cpu in (("rabbitmq", rabbitmq_ms), ("pubsub", pubsub_ms)):
        figures = ConsumerFigures(ConsumerRun(rate=3000, broker=broker))
        figures.costs["consumer"] = ServiceCost(cpu_ms_per_id=cpu)
        pair.append(figures)
    return pair[0], pair[1]


def test_the_broker_ratio_is_pubsub_over_rabbitmq_per_round_and_says_what_it_is_not() -> None:
    results = Results(MachineInfo.now(), "python -m bench", smoke=False)
    results.broker_rounds = [broker_pair(0.1, 0.2), broker_pair(0.2, 0.3), broker_pair(0.1, 0.1)]
    ratio = pubsub_vs_rabbitmq(results)
    assert ratio.values == pytest.approx((2.0, 1.5, 1.0))
    assert ratio.median == pytest.approx(1.5)
    line = pubsub_summary(results)
    assert "ratio pubsub/rabbitmq 1.50\N{MULTIPLICATION SIGN} (1.00\N{EN DASH}2.00, 3 runs)" in line
    assert "the emulator is not the service" in line


@pytest.mark.parametrize(
    ("run", "line"),
    [
        (ConsumerRun(rate=3000, broker="kafka"), "broker must be rabbitmq or pubsub, not 'kafka'"),
        (ConsumerRun(rate=0, broker="pubsub"), "broker pubsub: load mode only"),
        (ConsumerRun(rate=3000, via_producer=True, broker="pubsub"), "broker pubsub: load mode"),
    ],
)
def test_a_broker_the_bench_cannot_run_is_refused_with_one_line(
    run: ConsumerRun, line: str
) -> None:
    with pytest.raises(SystemExit, match=line):
        Bench(run)
