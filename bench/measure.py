"""What every benchmark reads from the machine: who it ran on, and what a process costs.

CPU time and memory come from ``/proc`` (Linux), so a process is measured from outside without
instrumenting it: CPU is user + system time from ``/proc/<pid>/stat``, peak memory ``VmHWM``
and current memory ``VmRSS`` from ``/proc/<pid>/status``.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
AMQP_URI = os.environ.get("BENCH_AMQP_URI", "amqp://guest:guest@127.0.0.1:5672/")
ADMIN_DSN = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
LIBRARIES = (
    "aio-pika",
    "aiormq",
    "aiohttp",
    "asyncpg",
    "fastapi",
    "uvicorn",
    "uvloop",
    "orjson",
    "matplotlib",
    "py-spy",
)


def database_dsn(database: str) -> str:
    """The admin DSN, pointed at ``database``."""
    return ADMIN_DSN.rsplit("/", 1)[0] + f"/{database}"


def postgres_env(database: str) -> dict[str, str]:
    """The services' POSTGRES_* settings for ``database`` on the admin DSN's server."""
    parts = urlsplit(ADMIN_DSN)
    return {
        "POSTGRES_HOST": parts.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(parts.port or 5432),
        "POSTGRES_USER": unquote(parts.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(parts.password or ""),
        "POSTGRES_DB": database,
    }


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def memory_total_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return float("nan")


def load_average() -> str:
    return "/".join(Path("/proc/loadavg").read_text().split()[:3])


def machine() -> str:
    """One line: cores, CPU, Python, load (printed by the single-purpose scripts)."""
    return (
        f"nproc={os.cpu_count()} cpu={cpu_model()!r} python={platform.python_version()} "
        f"load(1/5/15m)={load_average()}"
    )


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_commit() -> str:
    result = subprocess.run(
        ["git", "describe", "--always", "--dirty", "--abbrev=12"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() or "unknown"


@dataclass(frozen=True)
class MachineInfo:
    cores: int
    cpu: str
    memory_gb: float
    load_before: str
    date: str
    commit: str
    versions: dict[str, str]

    @classmethod
    def now(cls) -> MachineInfo:
        return cls(
            cores=os.cpu_count() or 0,
            cpu=cpu_model(),
            memory_gb=memory_total_gb(),
            load_before=load_average(),
            date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            commit=git_commit(),
            versions=library_versions(),
        )


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (children not included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def _status_mb(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    return float("nan")


def vm_hwm_mb(pid: int) -> float:
    """Peak resident memory of a process (VmHWM), MB."""
    return _status_mb(pid, "VmHWM:")


def vm_rss_mb(pid: int) -> float:
    return _status_mb(pid, "VmRSS:")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class CpuMeter:
    """CPU seconds a process spends between :meth:`start` and :meth:`stop` (``pid=None``: this
    process)."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.seconds = 0.0
        self._start = 0.0

    def _read(self) -> float:
        return own_cpu_seconds() if self.pid is None else cpu_seconds(self.pid)

    def start(self) -> None:
        self._start = self._read()

    def stop(self) -> float:
        self.seconds = self._read() - self._start
        return self.seconds
