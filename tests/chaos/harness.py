"""The suite the chaos scenarios share, and how one scenario is measured.

A scenario marks the tester's ledger, injects its fault while the tester keeps sending, marks the
end of the fault, then :meth:`Scenario.settle` measures how long until every online id of every
callback sent before the fault ended is stored (the backlog is gone), and audits the whole window.
Results accumulate in ``var/chaos-results.json`` for ``python -m tests.chaos.report``.
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
import httpx
import redis.asyncio

from tester.audit import Audit, audit
from tests.support import run_results
from tests.support.processes import PROJECT_ROOT
from tests.support.proxy import TcpProxy
from tests.support.rabbit_node import PrivateRabbitNode
from tests.support.redis_server import RedisServer
from tests.support.run_results import read_from, sent_at
from tests.support.suite import Suite
from tests.support.waiting import eventually

RESULTS_PATH = PROJECT_ROOT / "var" / "chaos-results.json"
CALLBACK_TIMEOUT_S = 1.0  # the tester's client timeout: the producer must answer within it
SETTLED_LOAD_S = 2.0  # the window goes on this long after the fault, to see steady service again
AUDIT_APPLICATION = "lastseen-chaos-audit"  # pg_terminate_backend spares the audit's session


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Window:
    """A stretch of wall-clock time (the tester's ledger speaks wall-clock UTC)."""

    start: datetime
    end: datetime

    def holds_send(self, sent_at: datetime) -> bool:
        """Whether a callback sent at ``sent_at`` could still be in flight within the window."""
        earliest = self.start.timestamp() - CALLBACK_TIMEOUT_S
        return earliest <= sent_at.timestamp() and sent_at <= self.end


@dataclass
class ScenarioResult:
    name: str
    fault: str
    fault_s: float
    callbacks: int
    answered_in_time: int
    refused_while_down: int
    slowest_ok_ms: float
    ids_sent: int
    online_ids_checked: int
    lost: list[int]
    offline_stored: list[int]
    recovery_s: float | None
    elapsed_s: float
    failures: list[dict[str, Any]] = field(default_factory=list)
    tracebacks: list[str] = field(default_factory=list)
    notes: str = ""

    @property
    def passed(self) -> bool:
        return (
            not self.lost
            and not self.offline_stored
            and not self.failures
            and not self.tracebacks
            and self.recovery_s is not None
            and self.answered_in_time + self.refused_while_down == self.callbacks
        )

    def describe(self) -> str:
        return json.dumps(self.as_json(), indent=1, default=str)[:4000]

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["passed"] = self.passed
        data["failures"] = self.failures[:10]
        return data


@dataclass
class ChaosSuite:
    """The suite of real processes, wired through proxies that a scenario can cut or stall."""

    suite: Suite
    broker_proxy: TcpProxy
    db_proxy: TcpProxy
    node: PrivateRabbitNode | None
    database_url: str  # direct, not through the proxy: the audit must see through every fault
    database_name: str
    knobs: Mapping[str, str]
    results: list[ScenarioResult] = field(default_factory=list)
    started_at: datetime = field(default_factory=now)
    redis: RedisServer | None = None
    """With ``STORE=redis``: the suite's Redis (``db_proxy`` then stands before it)."""
    pubsub: bool = False
    """With ``BROKER=pubsub``: ``broker_proxy`` stands before the Pub/Sub emulator."""
    hang_s: float = 10.0
    """How long the broker's path hangs in that scenario."""

    @property
    def store_noun(self) -> str:
        """What the scenarios call the store: ``database`` (PostgreSQL) or ``Redis``."""
        return "Redis" if self.redis else "database"

    @property
    def label(self) -> str | None:
        """What the rows of a suite other than RabbitMQ + PostgreSQL say they ran on."""
        return "Pub/Sub" if self.pubsub else "Redis" if self.redis else None

    def named(self, scenario: str) -> str:
        """A scenario's name in the results: a suite other than the default says which."""
        label = self.label
        return scenario if label is None or label in scenario else f"{scenario} ({label})"

    def consumers_ready(self) -> list[int]:
        """Each running consumer's ``/ready`` status code (0: no answer)."""
        codes = []
        for name, entry in self.suite.entries.items():
            if entry.module != "consumer" or name not in self.suite.processes:
                continue
            port = self.suite.env[f"{name.upper()}_METRICS_PORT"]
            try:
                codes.append(httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code)
            except httpx.HTTPError:
                codes.append(0)
        return codes

    async def stored(self) -> dict[int, datetime]:
        if self.redis is not None:
            return await redis_stored(self.redis.url)
        connection = await asyncpg.connect(
            self.database_url, server_settings={"application_name": AUDIT_APPLICATION}
        )
        try:
            return dict(await connection.fetch("SELECT id, last_seen FROM object"))
        finally:
            await connection.close()

    async def terminate_sessions(self) -> int:
        """``pg_terminate_backend`` every session of the suite's database but the audit's."""
        connection = await asyncpg.connect(
            self.database_url, server_settings={"application_name": AUDIT_APPLICATION}
        )
        try:
            return int(
                await connection.fetchval(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = $1 AND pid <> pg_backend_pid()"
                    " AND application_name <> $2",
                    self.database_name,
                    AUDIT_APPLICATION,
                )
            )
        finally:
            await connection.close()

    def ledger_after(self, seq: int) -> list[dict[str, Any]]:
        return list(self.suite.tester("GET", f"/ledger?after={seq}")["records"])

    def producer_ready(self) -> dict[str, Any]:
        return httpx.get(f"{self.suite.producer_url}/ready", timeout=2).json()  # type: ignore[no-any-return]

    async def begin(self, name: str, fault: str) -> Scenario:
        """Start a scenario once callbacks are flowing and being answered (``name`` as
        :meth:`named` gives it)."""
        name = self.named(name)
        start_seq = self.suite.callbacks_sent()

        async def flowing() -> bool:
            return sum(bool(r["ok"]) for r in self.ledger_after(start_seq)) >= 3

        await eventually(flowing, timeout=15, interval=0.1, what="callbacks flowing")
        return Scenario(self, name, fault, self.suite.callbacks_sent())

    def log_files(self) -> list[Path]:
        """Every service log of the suite, those of killed and replaced processes included."""
        return sorted(self.suite.workdir.glob("*.log"))

    def record(self, result: ScenarioResult) -> None:
        # In place: the run's suites (one per store) share the list.
        self.results[:] = [r for r in self.results if r.name != result.name] + [result]
        write_results(self)


class Scenario:
    def __init__(self, chaos: ChaosSuite, name: str, fault: str, start_seq: int) -> None:
        self.chaos = chaos
        self.name = name
        self.fault = fault
        self.start_seq = start_seq
        self.producer_down: list[Window] = []
        self._fault_began: tuple[datetime, float] | None = None
        self._fault_ended: tuple[datetime, float] | None = None
        self._began = time.monotonic()
        self._log_offsets = {path: path.stat().st_size for path in chaos.log_files()}

    def new_output(self, prefix: str) -> str:
        """What the processes whose log name starts with ``prefix`` wrote since the start."""
        return "".join(
            read_from(path, self._log_offsets.get(path, 0))
            for path in self.chaos.log_files()
            if path.name.startswith(prefix)
        )

    def crashed(self) -> list[str]:
        """Log files of the suite with a traceback written since the scenario began."""
        return [
            path.name
            for path in self.chaos.log_files()
            if "Traceback" in read_from(path, self._log_offsets.get(path, 0))
        ]

    def fault_begins(self) -> None:
        self._fault_began = (now(), time.monotonic())

    def fault_ends(self) -> None:
        self._fault_ended = (now(), time.monotonic())

    def producer_was_down(self, start: datetime, end: datetime) -> None:
        """No producer process listened from ``start`` to ``end``: callbacks sent then may be
        refused (a single replica; the tester records the failure and no 2xx was promised)."""
        self.producer_down.append(Window(start, end))

    async def settle(self, *, timeout: float = 45.0, notes: str = "") -> ScenarioResult:
        """Wait for the backlog of the fault to be stored; audit the scenario's whole window."""
        assert self._fault_began is not None and self._fault_ended is not None
        ended_at, ended_mono = self._fault_ended
        deadline = time.monotonic() + timeout
        recovery: float | None = None
        while True:
            records = self.chaos.ledger_after(self.start_seq)
            # The tester sends one callback at a time: once one sent after the fault is in the
            # ledger, every one sent before it is there too.
            if any(sent_at(r) > ended_at for r in records):
                before = [r for r in records if sent_at(r) <= ended_at]
                found = audit(before, await self.chaos.stored())
                if not found.online_missing and not found.offline_stored:
                    recovery = time.monotonic() - ended_mono
                    break
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        # Callbacks accepted while the backlog drained, and for a while after, count too.
        await asyncio.sleep(max(0.0, ended_mono + SETTLED_LOAD_S - time.monotonic()))
        window = self.chaos.ledger_after(self.start_seq)
        final = audit(window, await self.chaos.stored())
        while final.online_missing and time.monotonic() < deadline + 15:
            await asyncio.sleep(0.2)
            final = audit(window, await self.chaos.stored())
        result = self._result(window, final, recovery, notes)
        self.chaos.record(result)
        return result

    def _result(
        self,
        records: list[dict[str, Any]],
        found: Audit,
        recovery: float | None,
        notes: str,
    ) -> ScenarioResult:
        assert self._fault_began is not None and self._fault_ended is not None
        in_time = refused = 0
        failures = []
        for record in records:
            if record["ok"] and record["latency_ms"] <= CALLBACK_TIMEOUT_S * 1000:
                in_time += 1
            elif record["status"] is None and any(
                window.holds_send(sent_at(record)) for window in self.producer_down
            ):
                refused += 1
            else:
                failures.append(record)
        return ScenarioResult(
            name=self.name,
            fault=self.fault,
            fault_s=round(self._fault_ended[1] - self._fault_began[1], 1),
            callbacks=len(records),
            answered_in_time=in_time,
            refused_while_down=refused,
            slowest_ok_ms=max((r["latency_ms"] for r in records if r["ok"]), default=0.0),
            ids_sent=sum(len(r["object_ids"]) for r in records if r["ok"]),
            online_ids_checked=found.online_expected,
            lost=found.online_missing,
            offline_stored=found.offline_stored,
            recovery_s=None if recovery is None else round(recovery, 1),
            elapsed_s=round(time.monotonic() - self._began, 1),
            failures=failures,
            tracebacks=self.crashed(),
            notes=notes,
        )


async def redis_stored(url: str, prefix: str = "object:") -> dict[int, datetime]:
    """Every ``<prefix><id>`` key and its ``last_seen`` (epoch milliseconds)."""
    client = redis.asyncio.Redis.from_url(url, socket_timeout=5)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        values = await client.mget(keys) if keys else []
    finally:
        await client.aclose()
    return {
        int(key[len(prefix) :]): datetime.fromtimestamp(int(value) / 1000, UTC)
        for key, value in zip(keys, values, strict=True)
        if value is not None
    }


def write_results(chaos: ChaosSuite, path: Path = RESULTS_PATH) -> None:
    run_results.write_results(
        path,
        command="./scripts/test -m chaos tests/chaos",
        started_at=chaos.started_at,
        finished_at=now(),
        broker="private RabbitMQ node" if chaos.node else "shared RabbitMQ",
        settings=dict(chaos.knobs),
        scenarios=[result.as_json() for result in chaos.results],
    )
