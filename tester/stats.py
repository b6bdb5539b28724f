"""Counters a test reads at ``GET /stats``: load, concurrency (overall and per id), outcomes."""

from __future__ import annotations

from collections import Counter
from typing import Any

from tester.choices import Fault

_ANSWERS = [fault.value for fault in Fault if fault is not Fault.HANG]


class ObjectStats:
    """``GET /objects`` traffic. Single-threaded: only the event loop touches it."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.per_id_in_flight: Counter[int] = Counter()
        self.reset()

    def reset(self) -> None:
        """Zero the counters and peaks; what is in flight now stays counted as in flight."""
        self.requests = 0
        self.invalid = 0
        self.outcomes: Counter[str] = Counter()
        self.per_id: Counter[int] = Counter()
        self.peak_in_flight = self.in_flight
        self.per_id_peak: Counter[int] = Counter(self.per_id_in_flight)

    def refused(self) -> None:
        self.requests += 1
        self.invalid += 1

    def started(self, object_id: int) -> None:
        self.requests += 1
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        self.per_id[object_id] += 1
        self.per_id_in_flight[object_id] += 1
        now = self.per_id_in_flight[object_id]
        if now > self.per_id_peak[object_id]:
            self.per_id_peak[object_id] = now

    def finished(self, object_id: int, outcome: Fault | None) -> None:
        """``outcome`` None: the client gave up (or the tester stopped) before the answer."""
        self.in_flight -= 1
        self.per_id_in_flight[object_id] -= 1
        if self.per_id_in_flight[object_id] <= 0:
            del self.per_id_in_flight[object_id]
        self.outcomes["gave_up" if outcome is None else outcome.value] += 1

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "invalid": self.invalid,
            "answered": {name: self.outcomes[name] for name in _ANSWERS},
            "gave_up": self.outcomes["gave_up"],
            "in_flight": self.in_flight,
            "peak_in_flight": self.peak_in_flight,
            "per_id": {str(key): count for key, count in sorted(self.per_id.items())},
            "per_id_peak_in_flight": {
                str(key): count for key, count in sorted(self.per_id_peak.items())
            },
        }


class CallbackStats:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sent = 0
        self.ok = 0
        self.failed = 0

    def record(self, ok: bool) -> None:
        self.sent += 1
        if ok:
            self.ok += 1
        else:
            self.failed += 1

    def as_json(self) -> dict[str, int]:
        return {"sent": self.sent, "ok": self.ok, "failed": self.failed}
