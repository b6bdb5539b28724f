"""The faults tier's suite, and the row each scenario records.

The suite is the chaos tier's (:class:`tests.chaos.harness.ChaosSuite`: the Procfile's processes
on a private RabbitMQ node and a database of their own, audited against the tester's ledger), with
more places to break: the consumers reach the status API through a proxy of their own and the
producer the broker through another (both shapeable, :mod:`tests.support.link_shaper`), and the
spool lives on a small tmpfs (:mod:`tests.support.small_disk`). A scenario is measured with the
chaos tier's :class:`~tests.chaos.harness.Scenario`; the row adds what these faults need: the
load, fast 503s where a scenario allows them, and whether every service still runs. Rows
accumulate in ``var/faults-results.json`` for ``python -m tests.faults.report``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from common.durations import parse_duration
from tests.chaos.conftest import KNOBS as CHAOS_KNOBS
from tests.chaos.harness import CALLBACK_TIMEOUT_S, ChaosSuite, ScenarioResult, now
from tests.support import run_results
from tests.support.processes import PROJECT_ROOT
from tests.support.proxy import TcpProxy
from tests.support.small_disk import SmallDisk

RESULTS_PATH = PROJECT_ROOT / "var" / "faults-results.json"
LOGS_PATH = PROJECT_ROOT / "var" / "faults-logs"  # the services' and engines' logs of the run

# The chaos tier's retry settings under a modest load at the status API's real delays (0.3-4.3 s,
# mean 2.3 s; issue 22): a callback every 100 ms of 0-20 ids from 0-9,999, about 100 ids/s, so
# about 230 lookups in flight (Little's law). 300 per consumer leave room to drain a backlog
# (2 x 300 / 2.3 s ≈ 260 ids/s); the id range is wide enough that lookups of one id seldom
# overlap (single-flight would blur the count). STATUS_TIMEOUT is above the slowest answer on
# the slow link (4.3 s + 0.25 s + a few retransmission timeouts).
KNOBS = {
    **CHAOS_KNOBS,
    "TESTER_DELAY_MIN": "300ms",
    "TESTER_DELAY_MAX": "4.3s",
    "TESTER_ID_RANGE": "10000",
    "TESTER_MAX_IDS": "20",
    "STATUS_TIMEOUT": "10s",
    "CONSUMER_MAX_CONSUMERS": "300",
}
LONGEST_LOOKUP_S = parse_duration(KNOBS["TESTER_DELAY_MAX"])
RECOVERY_BOUND_S = 30.0  # the backlog must be gone this long after the fault ended


@dataclass
class FaultRow:
    name: str
    fault: str
    fault_s: float
    callbacks: int
    answered_in_time: int
    refused_fast: int  # 503 within 1 s, where the scenario allows it (nothing promised)
    slowest_ok_ms: float
    callbacks_per_s: float
    ids_per_s: float
    online_ids_checked: int
    lost: list[int]
    offline_stored: list[int]
    recovery_s: float | None
    services_running: bool
    failures: list[dict[str, Any]] = field(default_factory=list)
    tracebacks: list[str] = field(default_factory=list)
    notes: str = ""

    @property
    def passed(self) -> bool:
        return (
            not self.failures
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


def fast_503(record: dict[str, Any]) -> bool:
    """Refused at once with a 503: the producer promised nothing and the tester knows it."""
    return record["status"] == 503 and record["latency_ms"] <= CALLBACK_TIMEOUT_S * 1000


@dataclass
class FaultRows:
    """Every scenario's row of the run, whichever suite it ran on, written at each new row."""

    knobs: Mapping[str, str]
    started_at: datetime = field(default_factory=now)
    engines: dict[str, str] = field(default_factory=dict)  # suite → what it ran on
    rows: list[FaultRow] = field(default_factory=list)

    def add(self, row: FaultRow) -> None:
        self.rows = [r for r in self.rows if r.name != row.name] + [row]
        self.write()

    def write(self) -> None:
        run_results.write_results(
            RESULTS_PATH,
            command="./scripts/test -m faults tests/faults",
            started_at=self.started_at,
            finished_at=now(),
            engines="; ".join(self.engines.values()),
            settings=dict(self.knobs),
            scenarios=[row.as_json() for row in self.rows],
        )


@dataclass(kw_only=True)
class AuditedSuite(ChaosSuite):
    """A chaos suite whose scenarios become :class:`FaultRow` rows (:meth:`row`) in ``rows``."""

    rows: FaultRows

    def record(self, result: ScenarioResult) -> None:
        """The chaos tier's own record would write its results file: rows are written instead."""

    def all_running(self) -> bool:
        return all(process.running() for process in self.suite.processes.values())

    def row(
        self, result: ScenarioResult, records: list[dict[str, Any]], *, allow_503: bool = False
    ) -> FaultRow:
        """The scenario's row: ``records`` is its window of the ledger (for the load and the
        fast 503s). The row is written to the results file at once."""
        refused = [r for r in result.failures if allow_503 and fast_503(r)]
        sent = [r for r in records if r["ok"]]
        span = _span_s(records)
        row = FaultRow(
            name=result.name,
            fault=result.fault,
            fault_s=result.fault_s,
            callbacks=result.callbacks,
            answered_in_time=result.answered_in_time,
            refused_fast=len(refused),
            slowest_ok_ms=result.slowest_ok_ms,
            callbacks_per_s=round(len(records) / span, 1) if span else 0.0,
            ids_per_s=round(sum(len(r["object_ids"]) for r in sent) / span, 1) if span else 0.0,
            online_ids_checked=result.online_ids_checked,
            lost=result.lost,
            offline_stored=result.offline_stored,
            recovery_s=result.recovery_s,
            services_running=self.all_running(),
            failures=[r for r in result.failures if r not in refused],
            tracebacks=result.tracebacks,
            notes=result.notes,
        )
        self.rows.add(row)
        return row


@dataclass(kw_only=True)
class FaultsSuite(AuditedSuite):
    """The chaos suite with a shapeable status path, producer→broker path and a small spool disk."""

    status_proxy: TcpProxy
    producer_broker_proxy: TcpProxy
    spool_disk: SmallDisk
    consumer_metrics: list[str]  # base URLs of the consumers' /metrics


def _span_s(records: list[dict[str, Any]]) -> float:
    if len(records) < 2:
        return 0.0
    times = sorted(run_results.sent_at(r) for r in records)
    return (times[-1] - times[0]).total_seconds()
