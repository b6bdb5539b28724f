"""How many concurrent slow ``GET /objects/{id}`` the tester holds, and what each costs it.

Starts ``python -m tester`` and, side by side, the minimal low-level aiohttp stand-in
``bench.consumer_status_server`` (no router, no stats, no faults), both with a fixed delay; fires
bursts of N concurrent requests at each, every request on its own new connection, from a cheap raw
uvloop client (so the server, not the client, is what is measured); prints wall time of the burst,
latency percentiles, the server's peak in flight and its CPU time per 1,000 requests.

    python -m bench.tester_capacity [--delay 1.0] [--sizes 1000,5000,10000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import uvloop

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    url: str
    peak_path: tuple[str, ...]

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak(self) -> int:
        with urllib.request.urlopen(self.url + "/stats", timeout=5) as response:
            value = json.load(response)
        for key in self.peak_path:
            value = value[key]
        return int(value)


def wait_for_line(log: Path, prefix: str, process: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if prefix in line:
                return line
        if process.poll() is not None:
            raise SystemExit(f"server exited: {log.read_text()}")
        time.sleep(0.05)
    raise SystemExit(f"server not ready: {log.read_text()}")


@contextmanager
def start_tester(delay: float, workdir: Path) -> Iterator[Server]:
    log = workdir / "tester.log"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CALLBACK_ENDPOINT": "http://127.0.0.1:9",
        "TESTER_HOST": "127.0.0.1",
        "TESTER_PORT": "0",
        "TESTER_INTERVAL": "1h",
        "TESTER_DELAY_MIN": str(delay),
        "TESTER_DELAY_MAX": str(delay),
        "LOG_FORMAT": "json",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tester"], cwd=workdir, env=env, stdout=out, stderr=out
        )
    try:
        port = json.loads(wait_for_line(log, '"tester_listening"', process))["port"]
        yield Server("tester", process, f"http://127.0.0.1:{port}", ("objects", "peak_in_flight"))
    finally:
        process.terminate()
        process.wait(timeout=15)


@contextmanager
def start_stand_in(delay: float, workdir: Path) -> Iterator[Server]:
    log = workdir / "stand_in.log"
    args = ["--port", "0", "--delay-min", str(delay), "--delay-max", str(delay)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.consumer_status_server", *args],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=out,
            stderr=out,
        )
    try:
        url = wait_for_line(log, "listening ", process).split()[-1]
        yield Server("low-level stand-in", process, url, ("peak",))
    finally:
        process.terminate()
        process.wait(timeout=15)


async def burst(port: int, count: int) -> tuple[float, list[float], int]:
    """``count`` requests at once on new connections; wall time, latencies, failures."""

    async def one(object_id: int) -> float:
        started = time.perf_counter()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"GET /objects/%d HTTP/1.1\r\nHost: tester\r\nConnection: close\r\n\r\n" % object_id
        )
        answer = await reader.read()
        writer.close()
        if not answer.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(answer[:80])
        return time.perf_counter() - started

    started = time.perf_counter()
    results = await asyncio.gather(*(one(n) for n in range(count)), return_exceptions=True)
    elapsed = time.perf_counter() - started
    latencies = sorted(r for r in results if isinstance(r, float))
    return elapsed, latencies, count - len(latencies)


def measure(server: Server, count: int) -> str:
    port = int(server.url.rsplit(":", 1)[1])
    cpu_before = server.cpu_seconds()
    elapsed, latencies, failed = uvloop.run(burst(port, count))
    cpu = server.cpu_seconds() - cpu_before
    p50 = latencies[len(latencies) // 2] if latencies else float("nan")
    p99 = latencies[int(len(latencies) * 0.99)] if latencies else float("nan")
    return (
        f"{server.name:<20} n={count:<6} burst {elapsed:5.2f}s  p50 {p50:5.2f}s  p99 {p99:5.2f}s  "
        f"failed {failed:<4} peak {server.peak():<6} cpu {cpu:5.2f}s "
        f"({1000 * cpu / count:4.2f}s per 1k)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=1.0, help="fixed answer delay, seconds")
    parser.add_argument("--sizes", default="1000,5000,10000", help="burst sizes, comma-separated")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    print(f"machine: {os.cpu_count()} cpus, {platform.processor() or platform.machine()}, ", end="")
    print(f"{cpu_model()}; python {platform.python_version()}; load {os.getloadavg()}")
    print(f"delay {args.delay}s; open files limit {hard}; raw uvloop client, a new connection each")
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        with (
            start_tester(args.delay, workdir) as tester,
            start_stand_in(args.delay, workdir) as bare,
        ):
            for size in sizes:
                for _ in range(args.repeat):
                    for server in (tester, bare):
                        print(measure(server, size), flush=True)
    print(f"load after: {os.getloadavg()}")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


if __name__ == "__main__":
    main()
