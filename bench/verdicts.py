"""Verdicts another run reproduces: a tail statistic only as deep as its samples support, repeats
summarised by median and range, and one rule for "met", "at the line" and "missed".

A p99 of 200 samples is, in effect, the second-slowest sample: one scheduler hiccup decides it
(a routine benchmark gave 2.66, 2.51 and 0.68 in three runs on a quiet machine). So a quantile
``q`` is reported only from at least ``SAMPLES_PER_TAIL / (1 - q)`` observations — a p99 from
2,000, a p95 from 400 — and a shallower one is reported, named as such, when there are fewer.
A verdict is given on the range over repeats, never on one run.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

# Twenty observations beyond the quantile: its value no longer rests on one or two outliers.
SAMPLES_PER_TAIL = 20
QUANTILES = (0.99, 0.95, 0.9, 0.5)


def supported_quantile(samples: int, wanted: float = 0.99) -> float | None:
    """The deepest quantile up to ``wanted`` that ``samples`` observations support."""
    for q in QUANTILES:
        if q <= wanted and samples >= round(SAMPLES_PER_TAIL / (1 - q)):
            return q
    return None


def quantile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (``nan`` for no values)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


@dataclass(frozen=True, slots=True)
class Tail:
    """A quantile with the number of observations behind it."""

    q: float | None  # None: too few observations for any tail
    value: float
    samples: int

    @property
    def name(self) -> str:
        return "–" if self.q is None else f"p{round(100 * self.q)}"

    def label(self, scale: float = 1.0, unit: str = "") -> str:
        if self.q is None:
            return f"– (n={self.samples:,}: too few)"
        return f"{self.name} {scale * self.value:,.1f}{unit} (n={self.samples:,})"


def tail(values: Sequence[float], wanted: float = 0.99, *, samples: int | None = None) -> Tail:
    """``values``' deepest supported quantile up to ``wanted`` (or the one ``samples`` allow)."""
    return at(values, supported_quantile(len(values) if samples is None else samples, wanted))


def common_quantile(
    samples: Iterable[Sequence[float]], wanted: float = 0.99, *, together: int = 1
) -> float | None:
    """One quantile for several samples compared with each other: the deepest the smallest
    supports (comparing one window's p99 with another's p90 would compare nothing).

    ``together``: how many observations one event moves at once. When a stall delays the flushes
    of 12 writers sharing one process and one database, their 12 commit latencies are one
    observation of that stall, not twelve: the support is counted in ``len // together``.
    """
    fewest = min((len(s) for s in samples), default=0)
    return supported_quantile(fewest // max(1, together), wanted)


def at(values: Sequence[float], q: float | None) -> Tail:
    """``values``' ``q`` quantile as a :class:`Tail` (``q=None``: too few for any)."""
    return Tail(q, math.nan if q is None else quantile(values, q), len(values))


@dataclass(frozen=True, slots=True)
class Spread:
    """One figure measured in several repeats."""

    values: tuple[float, ...]

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread:
        return cls(tuple(v for v in values if not math.isnan(v)))

    @property
    def repeats(self) -> int:
        return len(self.values)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else math.nan

    @property
    def low(self) -> float:
        return min(self.values, default=math.nan)

    @property
    def high(self) -> float:
        return max(self.values, default=math.nan)

    def label(self, digits: int = 2, unit: str = "") -> str:
        if not self.values:
            return "–"
        if len(self.values) == 1:
            return f"{self.median:,.{digits}f}{unit} (one run)"
        return (
            f"{self.median:,.{digits}f}{unit} "
            f"({self.low:,.{digits}f}–{self.high:,.{digits}f}, {self.repeats} runs)"
        )


class Verdict(StrEnum):
    MET = "met"
    AT_THE_LINE = "at the line"
    MISSED = "missed"
    ONE_RUN = "one run: no verdict"
    UNKNOWN = "not measured"


def judge(spread: Spread, target: float, *, at_most: bool) -> Verdict:
    """Met when every repeat meets ``target``, missed when none does, at the line otherwise.

    ``at_most``: the figure must stay at or below ``target`` (a latency); else at or above it
    (a rate). One repeat alone gives no verdict.
    """
    if not spread.values:
        return Verdict.UNKNOWN
    meets = [(v <= target) if at_most else (v >= target) for v in spread.values]
    if spread.repeats == 1:
        return Verdict.ONE_RUN
    if all(meets):
        return Verdict.MET
    if not any(meets):
        return Verdict.MISSED
    return Verdict.AT_THE_LINE
