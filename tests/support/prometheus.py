"""Debian's Prometheus for the tests: ``promtool`` to check the shipped config and rules, and a
real server on a free port that scrapes the running suite."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.ports import free_port
from tests.support.waiting import wait_until

OBSERVABILITY = Path(__file__).resolve().parents[2] / "deploy" / "observability"


def ensure_prometheus() -> str | None:
    """Install Debian's ``prometheus`` package (promtool included) if missing, without its
    recommends and without starting its system service. ``None`` when available, else why not."""
    if shutil.which("promtool") and shutil.which("prometheus"):
        return None
    if not shutil.which("apt-get") or os.geteuid() != 0:
        return "prometheus is not installed and apt-get as root is not available"
    with tempfile.TemporaryDirectory() as scratch:
        # invoke-rc.d asks this for permission: 101 = do not start the packaged service (it would
        # take port 9090, the producer's).
        policy = Path(scratch) / "policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "POLICYRCD": str(policy)}
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "prometheus"]
        for command in (install, ["apt-get", "update", "-q"], install):
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            if command is install and done.returncode == 0:
                break
    if shutil.which("promtool") and shutil.which("prometheus"):
        return None
    return f"installing Debian's prometheus failed: {done.stderr[-500:]}"


def promtool(*args: str, cwd: Path = OBSERVABILITY) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def shipped_config() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((OBSERVABILITY / "prometheus.yml").read_text())
    return config


def rewrite_targets(config: dict[str, Any], targets: dict[str, list[str]]) -> dict[str, Any]:
    """The shipped config with each job's service discovery replaced by static ``targets``
    (host:port) — nothing else changes — and rule files made absolute."""
    rewritten = yaml.safe_load(yaml.safe_dump(config))
    rewritten["rule_files"] = [str(OBSERVABILITY / name) for name in config["rule_files"]]
    for job in rewritten["scrape_configs"]:
        for key in ("static_configs", "dns_sd_configs"):
            job.pop(key, None)
        job["static_configs"] = [{"targets": targets[job["job_name"]]}]
    return rewritten


class PrometheusServer:
    """``prometheus`` on a free loopback port, its data in ``workdir``."""

    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.config_path = workdir / "prometheus.yml"
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PrometheusServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config))
        with (self.workdir / "prometheus.log").open("wb") as log:
            self.process = subprocess.Popen(
                [
                    "prometheus",
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--web.enable-lifecycle",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until(self._ready, timeout=30, what="prometheus ready")
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError((self.workdir / "prometheus.log").read_text()[-3000:])
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def api(self, path: str, **params: str) -> Any:
        answer = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = answer.json()
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] in ("vector", "scalar"), data
        return list(data["result"]) if data["resultType"] == "vector" else [data]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
