"""The tester's ledger against the table: was every online id of every answered callback stored?

Used by the end-to-end and chaos tests and by ``bench/soak.py``; it lives with the tester because
it reads the tester's ledger records (``GET /ledger``) and the tester's id convention (even ids
online, odd ids offline, under the default knobs).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass
class Audit:
    callbacks: int
    answered_in_time: int
    online_expected: int
    online_missing: list[int]
    offline_stored: list[int]
    failures: list[dict[str, Any]]

    @property
    def clean(self) -> bool:
        return (
            self.answered_in_time == self.callbacks
            and not self.online_missing
            and not self.offline_stored
        )


def audit(
    records: list[dict[str, Any]], stored: Mapping[int, datetime], *, timeout_s: float = 1.0
) -> Audit:
    """Check the store against the tester's ledger.

    Every even id of a callback answered 2xx must be stored with a ``last_seen`` no earlier than
    the latest such callback was sent: an older observation would mean the newest callback's id
    was lost. No odd id may be stored at all.
    """
    latest_sent: dict[int, datetime] = {}
    failures = []
    in_time = 0
    for record in records:
        if record["ok"] and record["latency_ms"] <= timeout_s * 1000:
            in_time += 1
        else:
            failures.append(record)
        if not record["ok"]:
            continue
        sent_at = datetime.fromisoformat(record["sent_at"])
        for object_id in record["object_ids"]:
            if object_id % 2 == 0 and latest_sent.get(object_id, sent_at) <= sent_at:
                latest_sent[object_id] = sent_at
    missing = sorted(
        object_id
        for object_id, sent_at in latest_sent.items()
        if object_id not in stored or stored[object_id] < sent_at
    )
    offline = sorted(object_id for object_id in stored if object_id % 2)
    return Audit(len(records), in_time, len(latest_sent), missing, offline, failures)
