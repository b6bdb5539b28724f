"""From raw readings to what the live view shows: rates and a lag p99 over a short window of
readings, and the text and JSON forms. Pure functions: no I/O here."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from liveview.sources import QueueDepths, Samples, SourceDown, Table

LAG_BUCKET = "lastseen_consumer_lag_seconds_bucket"
UNREACHABLE = "unreachable"


@dataclass
class Reading:
    """Everything read at one moment; a source that failed holds its :class:`SourceDown`."""

    at: float  # monotonic seconds
    wall: datetime
    producer: Samples | SourceDown
    consumers: list[Samples | SourceDown]
    queues: QueueDepths | SourceDown
    table: Table | SourceDown
    store: str = "postgresql"  # the store the table was read from: postgresql | redis


def total(samples: Samples, name: str) -> float:
    return sum(value for _, value in samples.get(name, []))


def buckets(samples: Samples, name: str) -> dict[float, float]:
    """Cumulative counts per upper bound, summed over every series (all consumers)."""
    summed: dict[float, float] = {}
    for labels, value in samples.get(name, []):
        bound = float(dict(labels)["le"])
        summed[bound] = summed.get(bound, 0.0) + value
    return summed


def quantile(q: float, cumulative: dict[float, float]) -> float | None:
    """Prometheus's ``histogram_quantile`` on cumulative bucket counts (linear within a bucket);
    None without observations."""
    bounds = sorted(cumulative)
    if not bounds or cumulative[bounds[-1]] <= 0:
        return None
    rank = q * cumulative[bounds[-1]]
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = cumulative[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # above the highest finite bucket: its bound, as Prometheus
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return None


def _consumer_samples(reading: Reading) -> list[Samples] | None:
    """Every consumer's samples, or None when any consumer did not answer (a sum over some of
    them would look like a drop)."""
    found = [samples for samples in reading.consumers if not isinstance(samples, SourceDown)]
    return found if found and len(found) == len(reading.consumers) else None


def _rate(first: float | None, last: float | None, seconds: float) -> float | None:
    if first is None or last is None or seconds <= 0 or last < first:
        return None  # a restart reset the counter: no rate for this window
    return (last - first) / seconds


@dataclass
class Snapshot:
    wall: datetime
    window: float
    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"time": self.wall.isoformat(), "window_s": round(self.window, 3), **self.values,
                "sources": self.sources}  # fmt: skip


def summarize(readings: Sequence[Reading]) -> Snapshot:
    """The newest reading, with rates over the span from the oldest reading given."""
    first, last = readings[0], readings[-1]
    seconds = last.at - first.at
    snapshot = Snapshot(last.wall, seconds)
    values, sources = snapshot.values, snapshot.sources

    def state(reading_part: object) -> str:
        return reading_part.state if isinstance(reading_part, SourceDown) else "ok"

    # RabbitMQ
    sources["rabbitmq"] = _source_text(last.queues)
    if isinstance(last.queues, QueueDepths):
        values["queue_work"] = last.queues.work
        values["queue_retry"] = last.queues.retry
        values["queue_dead"] = last.queues.dead
        values["dead_letters"] = last.queues.dead
    else:
        for key in ("queue_work", "queue_retry", "queue_dead", "dead_letters"):
            values[key] = state(last.queues)

    # producer
    sources["producer"] = _source_text(last.producer)
    if isinstance(last.producer, SourceDown):
        values["ids_in_per_s"] = values["spool_depth"] = last.producer.state
    else:
        before = None if isinstance(first.producer, SourceDown) else first.producer
        values["ids_in_per_s"] = _rate(
            total(before, "lastseen_producer_ids_total") if before is not None else None,
            total(last.producer, "lastseen_producer_ids_total"),
            seconds,
        )
        values["spool_depth"] = int(total(last.producer, "lastseen_producer_spool_depth"))

    # consumers
    down = [c for c in last.consumers if isinstance(c, SourceDown)]
    sources["consumers"] = (
        "none configured"
        if not last.consumers
        else "ok" if not down else "; ".join(str(problem) for problem in down)
    )  # fmt: skip
    now_samples, then_samples = _consumer_samples(last), _consumer_samples(first)
    if now_samples is None:
        shown = down[0].state if down else UNREACHABLE
        for key in ("ids_out_per_s", "stored_per_s", "lag_p99_s"):
            values[key] = shown
    else:

        def summed(samples: list[Samples] | None, name: str) -> float | None:
            return None if samples is None else sum(total(s, name) for s in samples)

        values["ids_out_per_s"] = _rate(
            summed(then_samples, "lastseen_consumer_ids_total"),
            summed(now_samples, "lastseen_consumer_ids_total"),
            seconds,
        )
        values["stored_per_s"] = _rate(
            summed(then_samples, "lastseen_consumer_lag_seconds_count"),
            summed(now_samples, "lastseen_consumer_lag_seconds_count"),
            seconds,
        )
        values["lag_p99_s"] = _window_p99(then_samples, now_samples)

    # the store: PostgreSQL's object table, or Redis's keys
    sources[last.store] = _source_text(last.table)
    if isinstance(last.table, Table):
        values["rows"] = last.table.rows
        values["oldest_last_seen"] = (
            last.table.oldest_last_seen.isoformat() if last.table.oldest_last_seen else None
        )
        values["oldest_age_s"] = last.table.oldest_age
    else:
        for key in ("rows", "oldest_last_seen", "oldest_age_s"):
            values[key] = last.table.state
    return snapshot


def _window_p99(then: list[Samples] | None, now: list[Samples]) -> float | None:
    """p99 of the lag of the rows stored within the window."""
    current: dict[float, float] = {}
    for samples in now:
        for bound, count in buckets(samples, LAG_BUCKET).items():
            current[bound] = current.get(bound, 0.0) + count
    if then is not None:
        for samples in then:
            for bound, count in buckets(samples, LAG_BUCKET).items():
                current[bound] = current.get(bound, 0.0) - count
        if any(count < 0 for count in current.values()):
            return None
    return quantile(0.99, current)


def _source_text(part: object) -> str:
    return str(part) if isinstance(part, SourceDown) else "ok"


LINES = (
    ("queue: work", "queue_work", ""),
    ("queue: retry tiers", "queue_retry", ""),
    ("queue: dead", "queue_dead", ""),
    ("ids/s in (producer)", "ids_in_per_s", "/s"),
    ("ids/s out (consumers)", "ids_out_per_s", "/s"),
    ("rows/s stored", "stored_per_s", "/s"),
    ("lag p99 (window)", "lag_p99_s", " s"),
    ("objects stored", "rows", ""),
    ("oldest last_seen", "oldest_last_seen", ""),
    ("oldest age", "oldest_age_s", " s"),
    ("spool depth", "spool_depth", ""),
    ("dead letters", "dead_letters", ""),
)


def _cell(value: Any, unit: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return f"{value:.2f}{unit}"
    return f"{value}{unit}"


def render_text(snapshot: Snapshot, *, title: str) -> str:
    width = max(len(label) for label, _, _ in LINES) + 2
    lines = [f"{title}  {snapshot.wall:%Y-%m-%d %H:%M:%S} UTC", ""]
    for label, key, unit in LINES:
        lines.append(f"{label:<{width}}{_cell(snapshot.values.get(key), unit)}")
    lines.append("")
    for name, text in snapshot.sources.items():
        lines.append(f"source {name:<12}{text}")
    return "\n".join(lines) + "\n"
