"""Soak: run the whole suite with ./scripts/run (default settings, the tester at its real delays)
for a while, and report what a user would check: failed callbacks in the tester's ledger, the
oldest row ever seen (must stay under OBJECT_TTL + ROUTINE_INTERVAL), and the ledger audit.

    python -m bench.soak --minutes 5

It uses run/local.env's database and queue (POSTGRES_DB=lastseen, QUEUE_NAME=bitburst) on this
machine's PostgreSQL and RabbitMQ, and stops the suite at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import asyncpg
import httpx

from tester.audit import audit

ROOT = Path(__file__).resolve().parents[1]


async def soak(minutes: float, database_url: str) -> int:
    log_path = ROOT / "var" / "soak.log"
    log_path.parent.mkdir(exist_ok=True)
    with log_path.open("wb") as log:
        runner = subprocess.Popen(  # noqa: ASYNC220 - started once, before the loop matters
            [str(ROOT / "scripts/run")],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    oldest = timedelta(0)
    try:
        pool = None
        deadline = time.monotonic() + 60
        while pool is None:
            try:
                pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
                await pool.fetchval("SELECT count(*) FROM object")
            except (OSError, asyncpg.PostgresError):
                if pool is not None:
                    await pool.close()
                    pool = None
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(1)
        await pool.execute("TRUNCATE object")
        end = time.monotonic() + minutes * 60
        samples = 0
        while time.monotonic() < end:
            age = await pool.fetchval("SELECT max(now() - last_seen) FROM object")
            oldest = max(oldest, age or timedelta(0))
            samples += 1
            await asyncio.sleep(1)  # the sampling period
        async with httpx.AsyncClient(base_url="http://127.0.0.1:9010", timeout=10) as client:
            await client.post("/control", json={"paused": True})
            ledger = (await client.get("/ledger")).json()
        # With the real 30 s TTL only the last callbacks can be audited row by row; give their
        # slowest lookups (4.3 s) time to land, polling with a deadline.
        recent = [r for r in ledger["records"] if r["seq"] > ledger["total"] - 4]
        settle_deadline = time.monotonic() + 20
        while True:
            stored = dict(await pool.fetch("SELECT id, last_seen FROM object"))
            result = audit(recent, stored)
            if result.clean or time.monotonic() > settle_deadline:
                break
            await asyncio.sleep(0.5)
        await pool.close()
    finally:
        os.killpg(runner.pid, signal.SIGINT)
        runner.wait(timeout=60)
    records = ledger["records"]
    failed = [r for r in records if not r["ok"]]
    print(
        f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
        f"python {platform.python_version()}, load {os.getloadavg()[0]:.2f}"
    )
    print(f"soak: {minutes:g} min, {samples} samples of max(now() - last_seen)")
    print(
        f"callbacks sent: {ledger['total']}, failed: {len(failed)}, "
        f"slowest answer: {max((r['latency_ms'] for r in records), default=0):.1f} ms"
    )
    print(f"oldest row ever seen: {oldest.total_seconds():.2f} s (limit 30 s + 3 s interval)")
    print(
        f"audit of the last 4 callbacks: {result.online_expected} online ids expected, "
        f"{len(result.online_missing)} missing, {len(result.offline_stored)} offline stored"
    )
    ok = not failed and oldest <= timedelta(seconds=33) and result.clean
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/lastseen")
    args = parser.parse_args()
    raise SystemExit(asyncio.run(soak(args.minutes, args.database_url)))


if __name__ == "__main__":
    main()
