"""Every callback the tester sent, with what came of it, for ``GET /ledger``."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class CallbackRecord:
    seq: int
    sent_at: datetime
    object_ids: list[int]
    status: int | None  # HTTP status; None when no answer came
    error: str | None  # why no answer came (timeout, refused, reset, ...)
    latency: float  # seconds from send to answer or failure

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def as_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "sent_at": self.sent_at.isoformat(),
            "object_ids": self.object_ids,
            "status": self.status,
            "error": self.error,
            "ok": self.ok,
            "latency_ms": round(self.latency * 1000, 3),
        }


class Ledger:
    """The last ``size`` records; ``total`` counts every one ever added."""

    def __init__(self, size: int) -> None:
        self._records: deque[CallbackRecord] = deque(maxlen=size)
        self.total = 0

    def add(self, record: CallbackRecord) -> None:
        self._records.append(record)
        self.total += 1

    def records(self, after: int = 0) -> list[CallbackRecord]:
        """Kept records whose ``seq`` is greater than ``after``."""
        return [record for record in self._records if record.seq > after]

    def as_json(self, after: int = 0) -> dict[str, Any]:
        kept = self.records(after)
        return {
            "total": self.total,
            "dropped": self.total - len(self._records),
            "records": [record.as_json() for record in kept],
        }
