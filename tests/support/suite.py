"""The whole suite as real processes, started from the Procfile the way ./scripts/run does, and
an audit of what the tester sent against what PostgreSQL holds."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from tests.support.ports import free_port
from tests.support.processes import PROJECT_ROOT, ServiceProcess
from tests.support.waiting import wait_until

PROCFILE = PROJECT_ROOT / "Procfile"
# The log event that says a service without an HTTP port is doing its work.
READY_EVENTS = {"consumer": '"subscribed"', "routine": '"routine_started"'}


@dataclass(frozen=True)
class ProcfileEntry:
    name: str
    module: str
    env: dict[str, str]


def procfile_entries(path: Path = PROCFILE) -> list[ProcfileEntry]:
    """``name: [VAR=value ...] [exec] python -m module`` lines; ``${VAR}`` left for
    :func:`expand`."""
    entries = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, command = line.split(":", 1)
        words = shlex.split(command)
        env = {}
        while words and re.fullmatch(r"\w+=.*", words[0]):
            key, value = words.pop(0).split("=", 1)
            env[key] = value
        if words[:1] == ["exec"]:
            words.pop(0)
        if words[:2] != ["python", "-m"] or len(words) != 3:
            raise ValueError(f"unexpected Procfile command for {name}: {command}")
        entries.append(ProcfileEntry(name.strip(), words[2], env))
    return entries


def expand(value: str, env: Mapping[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], value)


@dataclass
class Suite:
    """Producer, consumers, routine and tester, each a ``python -m`` process."""

    env: dict[str, str]
    workdir: Path
    processes: dict[str, ServiceProcess] = field(default_factory=dict)
    entries: dict[str, ProcfileEntry] = field(default_factory=dict)

    @classmethod
    def create(cls, base_env: Mapping[str, str], workdir: Path, **overrides: str) -> Suite:
        producer_port, tester_port = free_port(), free_port()
        env = {
            "CONSUMER_MAX_CONSUMERS": "500",
            # the Procfile's metrics ports (run/local.env sets fixed ones)
            "CONSUMER_1_METRICS_PORT": str(free_port()),
            "CONSUMER_2_METRICS_PORT": str(free_port()),
            "ROUTINE_METRICS_PORT": str(free_port()),
            "PRODUCER_PORT": str(producer_port),
            "TESTER_PORT": str(tester_port),
            "CALLBACK_ENDPOINT": f"http://127.0.0.1:{producer_port}",
            "TESTER_ENDPOINT": f"http://127.0.0.1:{tester_port}",
            "SPOOL_PATH": str(workdir / "spool.sqlite3"),
            **base_env,
            **overrides,
        }
        suite = cls(env=env, workdir=workdir)
        suite.entries = {entry.name: entry for entry in procfile_entries()}
        return suite

    @property
    def producer_url(self) -> str:
        return self.env["CALLBACK_ENDPOINT"]

    @property
    def tester_url(self) -> str:
        return self.env["TESTER_ENDPOINT"]

    def start(self, name: str) -> ServiceProcess:
        entry = self.entries[name]
        env = {**self.env, **{k: expand(v, self.env) for k, v in entry.env.items()}}
        process = ServiceProcess(entry.module, env, self.workdir).start()
        self.processes[name] = process
        return process

    def start_all(self, *, except_: tuple[str, ...] = ()) -> Suite:
        # Dependencies first, as compose's depends_on orders them.
        order = sorted(
            self.entries,
            key=lambda n: ["producer", "tester"].index(n) if n in ("producer", "tester") else 2,
        )
        for name in order:
            if name not in except_:
                self.start(name)
        for name in order:
            if name not in except_:
                self.wait_ready(name)
        return self

    def wait_ready(self, name: str, timeout: float = 30.0) -> None:
        process = self.processes[name]
        module = self.entries[name].module
        if module in ("producer", "tester"):
            url = self.producer_url if module == "producer" else self.tester_url
            process.wait_ready(lambda: _answers(f"{url}/health"), timeout=timeout)
        else:
            process.wait_for_log(READY_EVENTS[module], timeout=timeout)

    def kill(self, name: str) -> None:
        self.processes[name].kill()

    def restart(self, name: str) -> ServiceProcess:
        if self.processes[name].running():
            self.processes[name].stop()
        process = self.start(name)
        self.wait_ready(name)
        return process

    def stop_all(self) -> None:
        for process in reversed(list(self.processes.values())):
            process.stop()

    def tester(self, method: str, path: str, **kwargs: Any) -> Any:
        answer = httpx.request(method, f"{self.tester_url}{path}", timeout=10, **kwargs)
        answer.raise_for_status()
        return answer.json()

    def ledger(self) -> list[dict[str, Any]]:
        return list(self.tester("GET", "/ledger")["records"])

    def callbacks_sent(self) -> int:
        return int(self.tester("GET", "/ledger")["total"])

    def wait_for_callbacks(self, count: int, timeout: float) -> None:
        wait_until(lambda: self.callbacks_sent() >= count, timeout=timeout, what="callbacks")


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


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
