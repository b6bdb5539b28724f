"""The whole suite as real processes, started from the Procfile the way ./scripts/run does, and
an audit of what the tester sent against what PostgreSQL holds."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.ports import free_port, listens_on
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
    """``name: [VAR=value ...] [exec] [nice -n N] python -m module`` lines; ``${VAR}`` left for
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
        if words[:2] == ["nice", "-n"]:  # a CPU priority: the suite's tests run without it
            del words[:3]
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
        """Every service, the tester last: it sends its first callback as soon as it listens, so
        the producer must answer by then (compose orders them the same way with depends_on)."""
        names = [n for n in self.entries if n not in except_]
        first = [n for n in names if n != "tester"]
        for name in first:
            self.start(name)
        for name in first:
            self.wait_ready(name)
        if "tester" in names:
            self.start("tester")
            self.wait_ready("tester")
        return self

    def wait_ready(self, name: str, timeout: float = 30.0) -> None:
        process = self.processes[name]
        module = self.entries[name].module
        if module in ("producer", "tester"):
            url = self.producer_url if module == "producer" else self.tester_url
            port = int(self.env["PRODUCER_PORT" if module == "producer" else "TESTER_PORT"])
            # Its own socket, not only an answer: another test's server may hold a port picked
            # free for this one (tests/support/ports.py, listens_on).
            process.wait_ready(
                lambda: listens_on(process.pid, port) and _answers(f"{url}/health"),
                timeout=timeout,
            )
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
