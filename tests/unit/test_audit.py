"""The ledger audit (tester/audit.py) on hand-made ledgers."""

from datetime import UTC, datetime, timedelta

import pytest

from tester.audit import audit

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def record(
    seconds: int, ids: list[int], *, ok: bool = True, latency_ms: float = 10
) -> dict[str, object]:
    sent = (T0 + timedelta(seconds=seconds)).isoformat()
    return {"sent_at": sent, "object_ids": ids, "ok": ok, "latency_ms": latency_ms}


def test_a_clean_run_is_clean() -> None:
    result = audit(
        [record(0, [2, 3]), record(5, [2, 4])],
        {2: T0 + timedelta(seconds=6), 4: T0 + timedelta(seconds=5)},
    )
    assert result.clean and (result.callbacks, result.online_expected) == (2, 2)


def test_an_online_id_stored_before_its_latest_callback_is_missing() -> None:
    result = audit([record(0, [2]), record(5, [2])], {2: T0 + timedelta(seconds=1)})
    assert result.online_missing == [2] and not result.clean


def test_offline_ids_stored_and_late_or_failed_answers_are_reported() -> None:
    records = [record(0, [1]), record(1, [6], latency_ms=1500), record(2, [8], ok=False)]
    result = audit(records, {1: T0, 6: T0 + timedelta(seconds=1)})
    assert result.offline_stored == [1]
    assert result.answered_in_time == 1 and len(result.failures) == 2
    assert result.online_missing == []  # id 8's callback failed: nothing was promised
