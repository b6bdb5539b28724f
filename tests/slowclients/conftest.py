"""The real producer with a lowered open-file limit, floods of misbehaving connections against it,
and what the test reads of the producer from /proc."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from common.open_files import connection_budget
from tests.support.ports import free_port
from tests.support.processes import PROJECT_ROOT, ServiceProcess
from tests.support.producer import producer_env, wait_broker_connected
from tests.support.services import Endpoints

# Low enough that a flood beyond it takes ~5,000 sockets and a few seconds, not 20,000.
PRODUCER_OPEN_FILES = 4096

# Starts the producer with the lower limit: Popen has no preexec here, so the interpreter
# lowers its own limit and replaces itself with the real one.
LAUNCHER = f"""#!{sys.executable}
import os, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, ({PRODUCER_OPEN_FILES}, {PRODUCER_OPEN_FILES}))
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""


@dataclass
class Producer:
    process: ServiceProcess
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def max_connections(self) -> int:
        return connection_budget(PRODUCER_OPEN_FILES).default

    def open_files(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def rss_bytes(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
        return int(line.split()[1]) * 1024

    def closed_counts(self) -> dict[str, int]:
        """The producer's latest ``slow_clients_closed`` log line (zeros before the first)."""
        counts = {"evicted": 0, "head_timeout": 0, "body_timeout": 0}
        for line in self.process.output().splitlines():
            if '"slow_clients_closed"' in line:
                event = json.loads(line)
                counts = {name: event[name] for name in counts}
        return counts


@pytest.fixture
def start_producer(
    endpoints: Endpoints, queue_name: str, tmp_path: Path
) -> Iterator[Callable[..., Producer]]:
    started: list[ServiceProcess] = []

    def start(**extra: str) -> Producer:
        launcher = tmp_path / "python-with-4096-files"
        launcher.write_text(LAUNCHER)
        launcher.chmod(0o755)
        port = free_port()
        env = producer_env(endpoints.amqp_uri, queue_name, tmp_path / "s.db", port, **extra)
        process = ServiceProcess("producer", env, tmp_path / "services", python=str(launcher))
        started.append(process.start())
        wait_broker_connected(process, port)
        return Producer(process, port)

    yield start
    for process in started:
        process.stop()


@dataclass
class Flood:
    """``python -m tests.slowclients.flood`` processes; their counts once they have ended."""

    processes: list[tuple[subprocess.Popen[bytes], Path]]

    def stop(self, timeout: float = 60.0) -> list[dict[str, Any]]:
        # Closing thousands of connections and writing the counts took over 20 s on a machine
        # busy with other test runs (seen once): the deadline is for a hang, not for speed.
        for process, _ in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        return self.reports(timeout)

    def reports(self, timeout: float) -> list[dict[str, Any]]:
        """Each process's counts, once it has ended (by itself after ``--seconds``, or stopped)."""
        reports = []
        for process, output in self.processes:
            process.wait(timeout=timeout)
            lines = output.read_text(errors="replace").splitlines()
            assert process.returncode == 0, lines[-20:]
            reports.append(json.loads(lines[-1]))
        return reports

    def kill(self) -> None:
        for process, _ in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture
def flood(tmp_path: Path) -> Iterator[Callable[..., Flood]]:
    floods: list[Flood] = []

    def start(port: int, pause: float, seconds: float, **connections: int) -> Flood:
        processes = []
        for mode, count in connections.items():
            # A file, not a pipe: a pipe nobody reads until the end would fill and stop the flood.
            output = tmp_path / f"flood-{len(floods)}-{mode}.log"
            with output.open("wb") as sink:
                process = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "tests.slowclients.flood",
                        f"--port={port}",
                        f"--mode={mode}",
                        f"--connections={count}",
                        f"--seconds={seconds}",
                        f"--pause={pause}",
                    ],
                    cwd=PROJECT_ROOT,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                )
            processes.append((process, output))
        floods.append(Flood(processes))
        return floods[-1]

    yield start
    for started in floods:
        started.kill()
