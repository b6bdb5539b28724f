"""The routine at scale: delete a million stale rows while the consumer's upserts go on.

In a database of its own: ``--stale-rows`` rows seen a day ago; an upserter that writes
``--rate`` new rows/s the way the consumer's batch writer does (one ``unnest`` upsert of
``rate x 50 ms`` rows every 50 ms, through :func:`common.db.upsert_last_seen`), open loop: batch
*i* is due at ``start + i x 50 ms`` and its latency counts from then, so a stall is not hidden.
First ``--baseline`` seconds of upserts alone; then ``python -m routine`` (``OBJECT_TTL=1h``, so
only the stale rows qualify; ``ROUTINE_INTERVAL=1s``) until no stale row is left. Upsert p50/p99
during the delete against the baseline.

    python -m bench.routine_bench [--stale-rows 1000000] [--rate 3000] [--baseline 20]
                                  [--batch-size N] [--batch-pause 50ms]

``--batch-size`` and ``--batch-pause`` default to the routine's own defaults (``RoutineSettings``),
so ``python -m bench`` measures what a deployment runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from bench.measure import (
    ADMIN_DSN,
    ROOT,
    CpuMeter,
    database_dsn,
    machine,
    percentile,
    postgres_env,
    vm_hwm_mb,
)
from common.db import migrate, upsert_last_seen
from common.durations import format_duration, parse_duration
from routine.settings import RoutineSettings

BATCH_INTERVAL = 0.05  # the consumer's BATCH_MAX_DELAY default
FRESH_IDS = 10_000_000_000  # above every stale id
ROUTINE_DEFAULTS = RoutineSettings.model_fields


@dataclass
class RoutineRun:
    stale_rows: int = 1_000_000
    rate: float = 3000.0  # upserted rows/s
    baseline: float = 20.0  # seconds of upserts before the routine starts
    batch_size: int = ROUTINE_DEFAULTS["routine_batch_size"].default  # ROUTINE_BATCH_SIZE
    batch_pause: float = ROUTINE_DEFAULTS["routine_batch_pause"].default  # ROUTINE_BATCH_PAUSE
    delete_timeout: float = 600.0


@dataclass
class RoutineFigures:
    run: RoutineRun
    fill_seconds: float = 0.0
    baseline: list[float] = field(default_factory=list)  # upsert latency, s
    during: list[float] = field(default_factory=list)
    delete_seconds: float = float("nan")
    routine_cpu_seconds: float = float("nan")
    routine_peak_rss_mb: float = float("nan")
    timeline: list[tuple[float, float]] = field(default_factory=list)  # (t since start, latency)
    routine_started: float = 0.0  # t since start
    routine_done: float = 0.0

    @property
    def ratio(self) -> float:
        return percentile(self.during, 0.99) / percentile(self.baseline, 0.99)


class Upserter:
    def __init__(self, pool: asyncpg.Pool, rate: float) -> None:
        self.pool = pool
        self.per_batch = max(1, round(rate * BATCH_INTERVAL))
        self.next_id = FRESH_IDS
        self.results: list[tuple[float, float]] = []  # (due, latency)

    async def run(self, stop: asyncio.Event) -> None:
        tasks: set[asyncio.Task[None]] = set()
        start = time.perf_counter()
        i = 0
        while not stop.is_set():
            due = start + i * BATCH_INTERVAL
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            ids = range(self.next_id, self.next_id + self.per_batch)
            self.next_id += self.per_batch
            task = asyncio.create_task(self.one(due, ids))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        if tasks:
            await asyncio.gather(*tasks)

    async def one(self, due: float, ids: range) -> None:
        now = datetime.now(UTC)
        await upsert_last_seen(self.pool, dict.fromkeys(ids, now))
        self.results.append((due, time.perf_counter() - due))


async def routine_at_scale(
    run: RoutineRun, progress: Callable[[str], None] | None = None
) -> RoutineFigures:
    say = progress or (lambda _text: None)
    figures = RoutineFigures(run)
    database = f"bench_routine_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{database}"')
    dsn = database_dsn(database)
    pool = await asyncpg.create_pool(dsn, min_size=4, max_size=8)
    routine: subprocess.Popen[bytes] | None = None
    try:
        await migrate(pool)
        say(f"inserting {run.stale_rows:,} stale rows")
        started = time.perf_counter()
        await pool.execute(
            "INSERT INTO object (id, last_seen) "
            "SELECT g, now() - interval '1 day' FROM generate_series(1, $1::bigint) g",
            run.stale_rows,
        )
        await pool.execute("ANALYZE object")
        figures.fill_seconds = time.perf_counter() - started

        upserter = Upserter(pool, run.rate)
        stop = asyncio.Event()
        t_0 = time.perf_counter()
        upserts = asyncio.create_task(upserter.run(stop))
        say(f"baseline: {run.rate:,.0f} upserts/s for {run.baseline:.0f} s")
        await asyncio.sleep(run.baseline)
        figures.routine_started = time.perf_counter() - t_0
        with tempfile.TemporaryDirectory(prefix="bench_routine_") as tmp:
            log = (Path(tmp) / "routine.log").open("wb")
            routine = subprocess.Popen(  # noqa: ASYNC220 - started once, not in a hot loop
                [sys.executable, "-m", "routine"],
                cwd=tmp,
                env={
                    **os.environ,
                    "PYTHONPATH": str(ROOT),
                    **postgres_env(database),
                    "OBJECT_TTL": "1h",
                    "ROUTINE_INTERVAL": "1s",
                    "ROUTINE_BATCH_SIZE": str(run.batch_size),
                    "ROUTINE_BATCH_PAUSE": format_duration(run.batch_pause),
                    "LOG_FORMAT": "json",
                },
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            meter = CpuMeter(routine.pid)
            meter.start()
            deadline = time.perf_counter() + run.delete_timeout
            while time.perf_counter() < deadline:
                await asyncio.sleep(0.25)
                if routine.poll() is not None:
                    raise SystemExit(f"routine exited: {(Path(tmp) / 'routine.log').read_text()}")
                if not await pool.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM object WHERE id <= $1)", run.stale_rows
                ):
                    break
                say(f"deleting: {time.perf_counter() - t_0 - figures.routine_started:.0f} s")
            figures.routine_done = time.perf_counter() - t_0
            figures.delete_seconds = figures.routine_done - figures.routine_started
            figures.routine_cpu_seconds = meter.stop()
            figures.routine_peak_rss_mb = vm_hwm_mb(routine.pid)
            routine.terminate()
            # Not routine.wait(): it would block this loop, and the upserts it times, while the
            # routine shuts down (a 120-130 ms "stall" at the end of the delete came from that).
            await asyncio.to_thread(routine.wait, 20)
        stop.set()
        await upserts
        for due, latency in upserter.results:
            t = due - t_0
            figures.timeline.append((t, latency))
            if t < figures.routine_started:
                figures.baseline.append(latency)
            elif t <= figures.routine_done:
                figures.during.append(latency)
    finally:
        if routine is not None and routine.poll() is None:
            routine.kill()
        await pool.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--stale-rows", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=3000.0, help="upserted rows/s")
    parser.add_argument("--baseline", type=float, default=20.0, help="seconds without the delete")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=RoutineRun.batch_size,
        help="ROUTINE_BATCH_SIZE (default: the routine's, %(default)s)",
    )
    parser.add_argument(
        "--batch-pause",
        type=parse_duration,
        default=RoutineRun.batch_pause,
        help="ROUTINE_BATCH_PAUSE, a duration such as 50ms (default: the routine's, %(default)s s)",
    )
    args = parser.parse_args()
    print(f"machine: {machine()}")
    run = RoutineRun(
        args.stale_rows,
        args.rate,
        args.baseline,
        batch_size=args.batch_size,
        batch_pause=args.batch_pause,
    )
    figures = asyncio.run(routine_at_scale(run))
    print(f"filled {args.stale_rows:,} stale rows in {figures.fill_seconds:.1f} s")
    print(
        f"routine: batches of {run.batch_size:,}, {format_duration(run.batch_pause)} apart; "
        f"deleted them in {figures.delete_seconds:.1f} s "
        f"({args.stale_rows / figures.delete_seconds:,.0f} rows/s), routine CPU "
        f"{figures.routine_cpu_seconds:.1f} s, peak RSS {figures.routine_peak_rss_mb:.0f} MB"
    )
    for name, values in (("without the delete", figures.baseline), ("during it", figures.during)):
        print(
            f"upsert of {round(args.rate * BATCH_INTERVAL)} rows {name}: "
            f"p50 {1000 * percentile(values, 0.5):.1f} ms, "
            f"p99 {1000 * percentile(values, 0.99):.1f} ms, "
            f"max {1000 * max(values, default=float('nan')):.1f} ms (n={len(values)})"
        )
    print(f"p99 during / without: {figures.ratio:.2f} (target <= 2)")
    slowest = sorted(figures.timeline, key=lambda point: point[1])[-3:]
    print(
        "slowest upserts (s after the routine started: ms): "
        + ", ".join(
            f"{t - figures.routine_started:+.2f}: {1000 * latency:.1f}" for t, latency in slowest
        )
    )


if __name__ == "__main__":
    main()
