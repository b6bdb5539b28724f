"""The suite on clusters of real engines, and how one fault is measured.

A fault marks the tester's ledger, happens while the tester keeps sending, and ends; then
:meth:`Fault.settle` measures how long until every online id of every callback sent before the
fault ended is stored (the backlog is gone), and audits the whole window with the tester's ledger
(:func:`tests.support.suite.audit`). Results accumulate in ``var/cluster-results.json`` for
``python -m tests.cluster.report``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from tester.audit import audit
from tests.support import run_results
from tests.support.haproxy import HaProxy
from tests.support.pg_pair import PgPair
from tests.support.processes import PROJECT_ROOT
from tests.support.rabbit_cluster import RabbitCluster
from tests.support.run_results import read_from, sent_at
from tests.support.suite import Suite
from tests.support.waiting import eventually

RESULTS_PATH = PROJECT_ROOT / "var" / "cluster-results.json"
CALLBACK_TIMEOUT_S = 1.0
RECOVERY_BOUND_S = 15.0  # the backlog must be gone this long after the fault ended
SETTLED_LOAD_S = 2.0
QUEUE = "lastseen_cluster"
DATABASE = "lastseen_cluster"


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class FaultResult:
    name: str
    fault: str
    fault_s: float
    callbacks: int
    answered_in_time: int
    slowest_ok_ms: float
    callbacks_per_s: float
    ids_sent: int
    ids_per_s: float
    online_ids_checked: int
    lost: list[int]
    offline_stored: list[int]
    recovery_s: float | None
    services_running: bool
    elapsed_s: float
    failures: list[dict[str, Any]] = field(default_factory=list)
    tracebacks: list[str] = field(default_factory=list)
    notes: str = ""

    @property
    def passed(self) -> bool:
        return (
            self.answered_in_time == self.callbacks
            and not self.lost
            and not self.offline_stored
            and self.recovery_s is not None
            and self.recovery_s <= RECOVERY_BOUND_S
            and self.services_running
            and not self.tracebacks
        )

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["passed"] = self.passed
        data["failures"] = self.failures[:10]
        return data

    def describe(self) -> str:
        return json.dumps(self.as_json(), indent=1, default=str)[:4000]


@dataclass
class ClusterSuite:
    suite: Suite
    rabbit: RabbitCluster
    pg: PgPair
    balancer: HaProxy
    audit_dsn: str  # every PostgreSQL host, read-write only: the audit follows a failover
    queue: str
    knobs: Mapping[str, str]
    results: list[FaultResult] = field(default_factory=list)
    started_at: datetime = field(default_factory=now)

    async def stored(self) -> dict[int, datetime]:
        connection = await asyncpg.connect(self.audit_dsn, timeout=5)
        try:
            return dict(await connection.fetch("SELECT id, last_seen FROM object"))
        finally:
            await connection.close()

    def ledger_after(self, seq: int) -> list[dict[str, Any]]:
        return list(self.suite.tester("GET", f"/ledger?after={seq}")["records"])

    def log_files(self) -> list[Path]:
        return sorted(self.suite.workdir.glob("*.log"))

    def all_running(self) -> bool:
        return all(process.running() for process in self.suite.processes.values())

    async def begin(self, name: str, fault: str) -> Fault:
        start_seq = self.suite.callbacks_sent()

        async def flowing() -> bool:
            return sum(bool(r["ok"]) for r in self.ledger_after(start_seq)) >= 5

        await eventually(flowing, timeout=20, interval=0.1, what="callbacks flowing")
        return Fault(self, name, fault, self.suite.callbacks_sent())

    def record(self, result: FaultResult) -> None:
        self.results = [r for r in self.results if r.name != result.name] + [result]
        write_results(self)


class Fault:
    def __init__(self, cluster: ClusterSuite, name: str, fault: str, start_seq: int) -> None:
        self.cluster = cluster
        self.name = name
        self.fault = fault
        self.start_seq = start_seq
        self._began_at = time.monotonic()
        self._fault_began: float | None = None
        self._fault_ended: tuple[datetime, float] | None = None
        self._log_offsets = {path: path.stat().st_size for path in cluster.log_files()}

    def begins(self) -> None:
        self._fault_began = time.monotonic()

    def ends(self) -> None:
        self._fault_ended = (now(), time.monotonic())

    def crashed(self) -> list[str]:
        return [
            path.name
            for path in self.cluster.log_files()
            if "Traceback" in read_from(path, self._log_offsets.get(path, 0))
        ]

    async def settle(self, *, notes: str = "", timeout: float = 40.0) -> FaultResult:
        """Wait for the fault's backlog to be stored; audit the whole window."""
        assert self._fault_began is not None and self._fault_ended is not None
        ended_at, ended_mono = self._fault_ended
        deadline = time.monotonic() + timeout
        recovery: float | None = None
        while time.monotonic() < deadline:
            records = self.cluster.ledger_after(self.start_seq)
            # one callback at a time: once one sent after the fault is in the ledger, every one
            # sent before it is there too
            if any(sent_at(r) > ended_at for r in records):
                before = [r for r in records if sent_at(r) <= ended_at]
                found = audit(before, await self.cluster.stored())
                if not found.online_missing and not found.offline_stored:
                    recovery = time.monotonic() - ended_mono
                    break
            await asyncio.sleep(0.2)
        await asyncio.sleep(max(0.0, ended_mono + SETTLED_LOAD_S - time.monotonic()))
        window = self.cluster.ledger_after(self.start_seq)
        final = audit(window, await self.cluster.stored())
        # the window's last callbacks wait for their status answers (up to 4.3 s) like any other
        tail_deadline = time.monotonic() + 15
        while final.online_missing and time.monotonic() < tail_deadline:
            await asyncio.sleep(0.2)
            final = audit(window, await self.cluster.stored())
        ok = [r for r in window if r["ok"]]
        span = (sent_at(window[-1]) - sent_at(window[0])).total_seconds() if len(window) > 1 else 0
        ids_sent = sum(len(r["object_ids"]) for r in ok)
        result = FaultResult(
            name=self.name,
            fault=self.fault,
            fault_s=round(ended_mono - self._fault_began, 1),
            callbacks=len(window),
            answered_in_time=final.answered_in_time,
            slowest_ok_ms=max((r["latency_ms"] for r in ok), default=0.0),
            callbacks_per_s=round(len(window) / span, 1) if span else 0.0,
            ids_sent=ids_sent,
            ids_per_s=round(ids_sent / span, 1) if span else 0.0,
            online_ids_checked=final.online_expected,
            lost=final.online_missing,
            offline_stored=final.offline_stored,
            recovery_s=None if recovery is None else round(recovery, 1),
            services_running=self.cluster.all_running(),
            elapsed_s=round(time.monotonic() - self._began_at, 1),
            failures=final.failures,
            tracebacks=self.crashed(),
            notes=notes,
        )
        self.cluster.record(result)
        return result


def write_results(cluster: ClusterSuite, path: Path = RESULTS_PATH) -> None:
    run_results.write_results(
        path,
        command="./scripts/test -m cluster tests/cluster",
        started_at=cluster.started_at,
        finished_at=now(),
        engines="3 RabbitMQ 3.10 nodes, PostgreSQL 15 primary + synchronous standby, "
        "HAProxy 2.6 before 2 producers",
        settings=dict(cluster.knobs),
        scenarios=[result.as_json() for result in cluster.results],
    )
