"""HAProxy (Debian's ``haproxy`` package) in front of producer replicas, as the tests' own process.

The configuration is the one docs/high-availability.md explains: health checks on ``/health``,
connection retries with redispatch to another server, and — because every stage of the pipeline
is idempotent — a retry of a callback whose producer died mid-request. HAProxy 2.6 retries a POST
only with ``option http-buffer-request`` (it must still hold the body) and a ``retry-on`` beyond
``conn-failure``.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import httpx

from tests.support.ports import free_port
from tests.support.waiting import wait_until

BINARY = "haproxy"


def config(port: int, stats_port: int, servers: Sequence[tuple[str, int]]) -> str:
    """The balancer's configuration: ``servers`` are ``(name, port)`` on 127.0.0.1."""
    lines = [
        "global",
        "    maxconn 4096",
        "defaults",
        "    mode http",
        "    timeout connect 250ms",
        "    timeout client 30s",
        "    timeout server 5s",
        "    timeout http-request 5s",
        # A failed attempt is retried up to 3 times; `redispatch 1`: every retry goes to
        # another server than the one that failed.
        "    retries 3",
        "    option redispatch 1",
        "    option http-buffer-request",
        "    retry-on conn-failure empty-response junk-response",
        "frontend callbacks",
        f"    bind 127.0.0.1:{port}",
        "    default_backend producers",
        "backend producers",
        "    balance roundrobin",
        "    option httpchk GET /health",
        "    http-check expect status 200",
        "    default-server inter 500ms fastinter 250ms fall 2 rise 2",
        *(f"    server {name} 127.0.0.1:{server_port} check" for name, server_port in servers),
        "listen stats",
        f"    bind 127.0.0.1:{stats_port}",
        "    stats enable",
        "    stats uri /stats",
        "",
    ]
    return "\n".join(lines)


class HaProxy:
    def __init__(self, workdir: Path, servers: Sequence[tuple[str, int]]) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.stats_port = free_port()
        self.servers = list(servers)
        self.config_path = workdir / "haproxy.cfg"
        self.log_path = workdir / "haproxy.log"
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def ensure_installed() -> None:
        """Install Debian's haproxy package when it is missing (as root), else say how."""
        if shutil.which(BINARY) is not None:
            return
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise RuntimeError("haproxy is not installed: apt-get install haproxy")
        installed = subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", "haproxy"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        if installed.returncode != 0 or shutil.which(BINARY) is None:
            raise RuntimeError(f"apt-get install haproxy failed: {installed.stderr[-2000:]}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HaProxy:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(config(self.port, self.stats_port, self.servers))
        check = subprocess.run(
            [BINARY, "-c", "-f", str(self.config_path)],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if check.returncode != 0:
            raise RuntimeError(f"haproxy refused its configuration: {check.stdout}{check.stderr}")
        with self.log_path.open("wb") as log:
            # -db: stay in the foreground, so this process is the one to stop
            self.process = subprocess.Popen(
                [BINARY, "-db", "-f", str(self.config_path)], stdout=log, stderr=subprocess.STDOUT
            )
        wait_until(self._stats_answer, timeout=10, what="haproxy listening")
        return self

    def _stats_answer(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.stats_port}/stats", timeout=1).is_success
        except httpx.HTTPError:
            return False

    def stats(self) -> dict[str, dict[str, str]]:
        """Per server of the backend: its CSV stats row (``status``, ``stot``, ``retr``…)."""
        text = httpx.get(f"http://127.0.0.1:{self.stats_port}/stats;csv", timeout=2).text
        rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
        return {
            row["svname"]: row
            for row in rows
            if row["pxname"] == "producers" and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def server_up(self, name: str) -> bool:
        return self.stats()[name]["status"] == "UP"

    def sessions(self, name: str) -> int:
        return int(self.stats()[name]["stot"] or 0)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
