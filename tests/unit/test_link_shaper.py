"""The link shaper's clock: when each chunk of a slow, lossy or narrow link is delivered."""

from __future__ import annotations

import random

import pytest

from tests.support.link_shaper import Link, LinkClock

pytestmark = pytest.mark.unit


def clock(link: Link, seed: int = 7) -> LinkClock:
    return LinkClock(link, random.Random(seed))


def test_latency_and_jitter_stay_within_their_bounds() -> None:
    link = Link(latency=0.2, jitter=0.05)
    shaped = clock(link)
    # Chunks read far apart: none waits behind another, so each shows its own delay.
    delays = [shaped.delivery_time(t * 10.0, 100) - t * 10.0 for t in range(2000)]
    assert 0.15 <= min(delays) < 0.16
    assert 0.24 < max(delays) <= 0.25
    assert sum(delays) / len(delays) == pytest.approx(0.2, abs=0.005)


def test_chunks_never_overtake_each_other() -> None:
    shaped = clock(Link(latency=0.2, jitter=0.2, loss=0.1))
    deliveries = [shaped.delivery_time(t * 0.001, 1448) for t in range(5000)]
    assert deliveries == sorted(deliveries)


def test_a_bandwidth_cap_spaces_the_chunks_by_their_size() -> None:
    shaped = clock(Link(bandwidth=1000.0))
    deliveries = [shaped.delivery_time(0.0, 500) for _ in range(4)]
    assert deliveries == pytest.approx([0.5, 1.0, 1.5, 2.0])
    # An idle wire starts afresh: a chunk read later is not charged for the idle time.
    assert shaped.delivery_time(10.0, 500) == pytest.approx(10.5)


def test_a_lost_segment_costs_a_retransmission_timeout_with_backoff() -> None:
    link = Link(latency=0.01, loss=0.02)
    shaped = clock(link, seed=3)
    extra = [shaped.delivery_time(t * 10.0, 1448) - t * 10.0 - 0.01 for t in range(20000)]
    late = [e for e in extra if e > 1e-9]
    assert len(late) / len(extra) == pytest.approx(0.02, abs=0.004)
    # 200 ms for one loss, 200 + 400 ms when the retransmission is lost too, and so on.
    assert {round(e, 3) for e in late} <= {0.2, 0.6, 1.4, 3.0}
    assert shaped.retransmissions >= len(late)


def test_a_large_chunk_is_hit_as_often_as_its_segments() -> None:
    shaped = clock(Link(loss=0.02), seed=5)
    # 10 segments of 1448 bytes: 1 - 0.98**10 = 18 % of such chunks have a loss.
    extra = [shaped.delivery_time(t * 10.0, 14480) - t * 10.0 for t in range(20000)]
    assert sum(e > 0 for e in extra) / len(extra) == pytest.approx(0.183, abs=0.015)


def test_no_loss_no_jitter_is_a_plain_delay() -> None:
    shaped = clock(Link(latency=0.1))
    assert shaped.delivery_time(1.0, 65536) == pytest.approx(1.1)
    assert shaped.retransmissions == 0


@pytest.mark.parametrize(
    "settings",
    [
        {"latency": -0.1},
        {"latency": 0.1, "jitter": 0.2},
        {"loss": 1.0},
        {"loss": -0.01},
        {"bandwidth": 0.0},
    ],
    ids=str,
)
def test_a_link_that_cannot_exist_is_refused(settings: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="Link"):
        Link(**settings)


def test_describe_names_what_was_set() -> None:
    text = Link(latency=0.1, jitter=0.025, loss=0.02, bandwidth=65536).describe()
    assert text == "100 ms ± 25 ms, 2 % of segments lost, 64 KiB/s"
