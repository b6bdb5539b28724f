"""The spool's disk full while the broker is down (issue 22, scenario 6): callbacks that cannot be
made durable get a fast 503, never a 2xx; nothing accepted before is lost; accepting resumes as
soon as space returns, the broker still down; and once it is back the spool drains."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.support.waiting import eventually

from .harness import FaultsSuite, fast_503

pytestmark = pytest.mark.faults


def carries_ids(record: dict[str, Any]) -> bool:
    """A callback with ids: one without any needs no durable write and is answered anyway."""
    return bool(record["object_ids"])


async def test_spool_disk_full_while_the_broker_is_down(faults: FaultsSuite) -> None:
    disk = faults.spool_disk
    scenario = await faults.begin(
        "spool disk full, broker down",
        f"broker cut for producer and consumers; the spool's {disk.size_bytes // 2**20} MiB "
        "tmpfs filled to the last byte, then freed; then the broker back",
    )
    scenario.fault_begins()
    faults.producer_broker_proxy.cut()
    faults.broker_proxy.cut()
    await eventually(
        lambda: faults.producer_ready()["spool_depth"] > 0, timeout=15, what="callbacks spooled"
    )
    full_from = faults.suite.callbacks_sent()
    ballast = disk.fill()

    def refused_since(seq: int) -> list[dict[str, Any]]:
        return [r for r in faults.ledger_after(seq) if carries_ids(r) and not r["ok"]]

    # Full for a while (20 refusals, about 2 s at 10 callbacks/s), not one unlucky write.
    await eventually(lambda: len(refused_since(full_from)) >= 20, timeout=30, what="refusals")
    freed_from = faults.suite.callbacks_sent()
    disk.free()
    freed = time.monotonic()

    def accepted_since(seq: int) -> list[dict[str, Any]]:
        return [r for r in faults.ledger_after(seq) if carries_ids(r) and r["ok"]]

    await eventually(lambda: len(accepted_since(freed_from)) >= 3, timeout=20, what="accepting")
    resumed_s = time.monotonic() - freed
    full_window = faults.ledger_after(full_from)[: freed_from - full_from]
    faults.producer_broker_proxy.restore()
    faults.broker_proxy.restore()
    scenario.fault_ends()
    refusals = [r for r in full_window if carries_ids(r) and not r["ok"]]
    result = await scenario.settle(
        notes=f"{ballast // 1024} KiB of ballast filled the disk; {len(refusals)} callbacks "
        f"refused while it was full; accepting again {resumed_s:.1f} s after space returned"
    )
    row = faults.row(result, faults.ledger_after(scenario.start_seq), allow_503=True)
    # While the disk was full, every callback with ids got a fast 503 (and is not audited: no
    # 2xx, no promise); the audit proves every 2xx of the window, before and after, stored.
    assert refusals and all(fast_503(r) for r in refusals), refusals[:5]
    assert row.refused_fast >= len(refusals)
    assert row.passed, row.describe()
