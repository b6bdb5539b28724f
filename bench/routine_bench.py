"""The routine at scale: delete millions of stale rows while consumers' batch writers go on.

In a database of its own: ``--writers`` batch writers (the consumer's own
:class:`consumer.batch_writer.BatchWriter`, 500 rows / 50 ms) are fed new rows at ``--rate``
rows/s in all, continuously, as consumers would feed them. After ``--warmup`` seconds, the same
pair ``--repeats`` times, every pair from the same start:

1. ``--stale-rows`` rows seen a day ago are inserted, then ``VACUUM (ANALYZE)`` (this machine's
   PostgreSQL runs with ``autovacuum = off``: without it each pair would scan the previous pairs'
   dead index entries, and the delete slowed 13 → 30 → 39 s over three pairs) and ``CHECKPOINT``
   (the insert's dirty pages are written now, not by a checkpoint spread over the next windows);
2. a window of ``--baseline`` seconds **without** the delete;
3. a window **during** the delete: ``python -m routine`` (``OBJECT_TTL=1h``) is started, and the
   window runs from its ``routine_started`` log line to the ``expiry_tick`` that deleted the stale
   rows (the interpreter's start-up is no part of a delete; a deployed routine is long-lived).

What it reports, per window, is what a user of the consumer would notice:
- **commit latency**: how long each flush's upsert statement took (one sample per flush);
- **ack delay**: from a row reaching the writer to its commit, i.e. how much later its message is
  acked (one sample per row).
The target is commit latency's tail during the delete / without it, pair by pair, judged on the
range over the pairs (:mod:`bench.verdicts`). A stall (the machine's scheduler, a WAL flush)
delays every writer's flush at once, so the tail's support is counted in flushes *per writer*:
12 writers flushing every 50-55 ms over 25 s give ~5,300 commit latencies but ~450 observations
of the stalls, enough for a p95 and not for a p99 (the "p99" of ~3,200 flushes in a 15 s window
judged before was set by 3-7 stalls, and the verdict flipped between runs).

    python -m bench.routine_bench [--stale-rows 4000000] [--rate 3000] [--baseline 25]
                                  [--repeats 3] [--writers 12] [--warmup 3]
                                  [--batch-size N] [--batch-pause 4ms]

``--batch-size`` and ``--batch-pause`` default to the routine's own defaults (``RoutineSettings``),
so ``python -m bench`` measures what a deployment runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
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
    load_average,
    machine,
    postgres_env,
    vm_hwm_mb,
)
from bench.verdicts import Spread, Tail, Verdict, at, common_quantile, judge
from common.db import migrate
from common.durations import format_duration, parse_duration
from common.store.postgres import PostgresStore
from consumer.batch_writer import BatchWriter
from routine.settings import RoutineSettings

FRESH_IDS = 10_000_000_000  # above every stale id
FEED_INTERVAL = 0.005  # rows reach the writers every 5 ms, as lookups answer
WRITER_MAX_ROWS = 500  # the consumer's BATCH_MAX_ROWS default
WRITER_MAX_DELAY = 0.05  # the consumer's BATCH_MAX_DELAY default
ROUTINE_RATIO = 2.0  # issue 14's target: commit latency's tail during the delete at most 2x without
LOG_POLL = 0.02  # s between two reads of the routine's log: the windows' edges are this sharp
SETTLE = 1.0  # s after the CHECKPOINT before the window without the delete
ROUTINE_DEFAULTS = RoutineSettings.model_fields


@dataclass
class RoutineRun:
    # 4,000,000: a delete of ~27 s at ~150,000 rows/s, so ~480 flushes per writer (18 a second)
    # during it, the support of a p95 (a million rows, ~7 s, ~120 per writer: a p50 only).
    stale_rows: int = 4_000_000
    rate: float = 3000.0  # rows/s into the writers, all together
    baseline: float = 25.0  # seconds of each window without the delete, ~450 flushes per writer
    repeats: int = 3  # pairs (without, during)
    writers: int = 12  # consumers' batch writers, each flushing every 50 ms
    batch_size: int = ROUTINE_DEFAULTS["routine_batch_size"].default  # ROUTINE_BATCH_SIZE
    batch_pause: float = ROUTINE_DEFAULTS["routine_batch_pause"].default  # ROUTINE_BATCH_PAUSE
    delete_timeout: float = 600.0
    warmup: float = 3.0  # seconds of the writers before the first pair, measured by no window


@dataclass
class Window:
    during: bool  # the routine deleting, or not
    start: float  # seconds since the writers started
    end: float = 0.0
    commits: list[float] = field(default_factory=list)  # s, one per flush
    acks: list[float] = field(default_factory=list)  # s, one per row
    rows_deleted: int = 0
    routine_cpu_seconds: float = float("nan")

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass
class Pair:
    without: Window
    during: Window
    q: float | None = None  # one quantile for every window of the run, commits and acks alike

    @property
    def commit_tails(self) -> tuple[Tail, Tail]:
        return at(self.without.commits, self.q), at(self.during.commits, self.q)

    @property
    def ack_tails(self) -> tuple[Tail, Tail]:
        return at(self.without.acks, self.q), at(self.during.acks, self.q)

    @property
    def ratio(self) -> float:
        without, during = self.commit_tails
        return during.value / without.value

    @property
    def ack_ratio(self) -> float:
        without, during = self.ack_tails
        return during.value / without.value


@dataclass
class RoutineFigures:
    run: RoutineRun
    fills: list[float] = field(default_factory=list)  # s per insert of the stale rows
    vacuums: list[float] = field(default_factory=list)  # s per VACUUM before a pair
    checkpointed: bool = True  # False: the role may not run CHECKPOINT
    pairs: list[Pair] = field(default_factory=list)
    routine_peak_rss_mb: float = 0.0
    failed_flushes: int = 0
    flushes: list[tuple[float, float]] = field(default_factory=list)  # (t, commit latency)
    load: str = ""

    @property
    def fill_seconds(self) -> Spread:
        return Spread.of(self.fills)

    @property
    def fewest_per_writer(self) -> int:
        """Flushes per writer in the shortest window: the support of the tails."""
        counts = [len(w.commits) for p in self.pairs for w in (p.without, p.during)]
        return min(counts, default=0) // self.run.writers

    @property
    def ratios(self) -> Spread:
        return Spread.of(p.ratio for p in self.pairs)

    @property
    def ack_ratios(self) -> Spread:
        return Spread.of(p.ack_ratio for p in self.pairs)

    @property
    def verdict(self) -> Verdict:
        return judge(self.ratios, ROUTINE_RATIO, at_most=True)

    @property
    def ack_verdict(self) -> Verdict:
        return judge(self.ack_ratios, ROUTINE_RATIO, at_most=True)

    @property
    def baseline_spread(self) -> Spread:
        """The windows without the delete against each other: the run's own noise."""
        tails = [p.commit_tails[0].value for p in self.pairs]
        return Spread.of(t / min(tails) for t in tails) if tails else Spread(())

    @property
    def delete_seconds(self) -> Spread:
        return Spread.of(p.during.seconds for p in self.pairs)

    @property
    def rows_per_second(self) -> Spread:
        return Spread.of(p.during.rows_deleted / p.during.seconds for p in self.pairs)

    @property
    def routine_cpu_per_row_ms(self) -> Spread:
        return Spread.of(
            1000 * p.during.routine_cpu_seconds / p.during.rows_deleted for p in self.pairs
        )

    def noise(self) -> str:
        """Which source of noise dominates, as far as this run can tell."""
        own = self.baseline_spread.high
        if len(self.pairs) < 2:
            return "one pair: the run cannot tell its noise from the delete's effect"
        if not self.ratios.values or math.isnan(own):
            return "too few flushes per window for a tail: the run cannot tell"
        if own >= self.ratios.high:
            return (
                f"the windows without the delete differ among themselves by up to {own:.2f}×, "
                "as much as with it: scheduling and the machine's other work dominate, not the "
                "delete"
            )
        return (
            f"the windows without the delete differ among themselves by up to {own:.2f}×; the "
            "delete's effect is larger than that"
        )


class Feeder:
    """Rows at ``rate``/s spread over the writers, each row's owner its arrival time."""

    def __init__(self, writers: list[BatchWriter[float]], rate: float) -> None:
        self.writers = writers
        self.per_tick = rate * FEED_INTERVAL
        self.next_id = FRESH_IDS

    async def run(self, stop: asyncio.Event) -> None:
        start = time.perf_counter()
        owed = 0.0
        i = 0
        while not stop.is_set():
            delay = start + i * FEED_INTERVAL - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            owed += self.per_tick
            now = datetime.now(UTC)
            arrived = time.perf_counter()
            while owed >= 1:
                writer = self.writers[self.next_id % len(self.writers)]
                writer.add(self.next_id, now, arrived)
                self.next_id += 1
                owed -= 1
            i += 1


class Recorder:
    """The writers' listener: commit latencies and ack delays, each with its time."""

    def __init__(self, t_0: float) -> None:
        self.t_0 = t_0
        self.commits: list[tuple[float, float]] = []  # (t since start, s)
        self.acks: list[tuple[float, float]] = []
        self.failures = 0

    def on_flush(self, seconds: float, _rows: int) -> None:
        self.commits.append((time.perf_counter() - self.t_0, seconds))

    def on_stored(self, owners: list[float]) -> None:
        now = time.perf_counter()
        t = now - self.t_0
        self.acks.extend((t, now - arrived) for arrived in owners)

    def on_health(self, healthy: bool) -> None:
        # A failing flush is retried by the writer and shows in the commit and ack figures.
        self.failures += 0 if healthy else 1

    def fill(self, window: Window) -> None:
        window.commits = [s for t, s in self.commits if window.start <= t < window.end]
        window.acks = [s for t, s in self.acks if window.start <= t < window.end]


async def insert_stale(pool: asyncpg.Pool, rows: int) -> None:
    await pool.execute(
        "INSERT INTO object (id, last_seen) "
        "SELECT g, now() - interval '1 day' FROM generate_series(1, $1::bigint) g",
        rows,
    )


async def prepare_pair(pool: asyncpg.Pool, run: RoutineRun, figures: RoutineFigures) -> None:
    """Every pair from the same start: the stale rows in, no dead rows, no dirty pages."""
    started = time.perf_counter()
    await insert_stale(pool, run.stale_rows)
    figures.fills.append(time.perf_counter() - started)
    started = time.perf_counter()
    # What autovacuum does on a deployment; this machine's PostgreSQL has it off. It also removes
    # the previous pair's dead rows, which the next delete would otherwise scan past.
    await pool.execute("VACUUM (ANALYZE) object")
    figures.vacuums.append(time.perf_counter() - started)
    if figures.checkpointed:
        try:
            await pool.execute("CHECKPOINT")
        except asyncpg.InsufficientPrivilegeError:
            figures.checkpointed = False
    await asyncio.sleep(SETTLE)


class RoutineLog:
    """The routine's JSON log lines, read as they are appended."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def read(self) -> list[dict[str, object]]:
        with self.path.open("rb") as log:
            log.seek(self.offset)
            data = log.read()
        complete = data.rfind(b"\n") + 1  # a line still being written waits for the next read
        self.offset += complete
        entries = []
        for line in data[:complete].splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    entries.append(entry)
        return entries


async def delete_with_routine(
    run: RoutineRun, database: str, window: Window, t_0: float, workdir: Path
) -> float:
    """Run ``python -m routine`` until it logs a tick that deleted the stale rows; the window runs
    from its ``routine_started`` line to then. Return the routine's peak RSS (MB)."""
    log_path = workdir / "routine.log"
    log_path.write_bytes(b"")
    with log_path.open("ab") as log:
        routine = subprocess.Popen(  # noqa: ASYNC220 - started once per pair, not in a hot loop
            [sys.executable, "-m", "routine"],
            cwd=workdir,
            env={
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "PYTHONUNBUFFERED": "1",
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
    try:
        meter = CpuMeter(routine.pid)
        events = RoutineLog(log_path)
        deleted = 0
        started = False
        deadline = time.perf_counter() + run.delete_timeout
        while deleted < run.stale_rows:
            if time.perf_counter() > deadline:
                raise SystemExit(
                    f"the routine did not delete the stale rows in {run.delete_timeout} s"
                )
            await asyncio.sleep(LOG_POLL)
            if routine.poll() is not None:
                raise SystemExit(f"routine exited: {log_path.read_text()}")
            for entry in events.read():
                if entry.get("event") == "routine_started":
                    window.start = time.perf_counter() - t_0
                    meter.start()
                    started = True
                elif entry.get("event") == "expiry_tick" and started:
                    deleted += int(str(entry.get("deleted", 0)))
        window.end = time.perf_counter() - t_0
        window.rows_deleted = deleted
        window.routine_cpu_seconds = meter.stop()
        peak = vm_hwm_mb(routine.pid)
        routine.terminate()
        # Not routine.wait(): it would block this loop, and the writers it times, while the
        # routine shuts down (a 120-130 ms "stall" at the end of the delete came from that).
        await asyncio.to_thread(routine.wait, 20)
        return peak
    finally:
        if routine.poll() is None:
            routine.kill()


async def routine_at_scale(
    run: RoutineRun, progress: Callable[[str], None] | None = None
) -> RoutineFigures:
    say = progress or (lambda _text: None)
    figures = RoutineFigures(run)
    database = f"bench_routine_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{database}"')
    dsn = database_dsn(database)
    pool = await asyncpg.create_pool(dsn, min_size=run.writers, max_size=run.writers + 2)
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    try:
        await migrate(pool)
        t_0 = time.perf_counter()
        recorder = Recorder(t_0)
        writers: list[BatchWriter[float]] = [
            BatchWriter(
                PostgresStore(pool),
                max_rows=WRITER_MAX_ROWS,
                max_delay=WRITER_MAX_DELAY,
                on_flush=recorder.on_flush,
            )
            for _ in range(run.writers)
        ]
        tasks = [asyncio.create_task(w.run(recorder)) for w in writers]
        feeder = asyncio.create_task(Feeder(writers, run.rate).run(stop))
        await asyncio.sleep(run.warmup)
        windows: list[Window] = []
        with tempfile.TemporaryDirectory(prefix="bench_routine_") as tmp:
            for repeat in range(1, run.repeats + 1):
                say(f"pair {repeat}: inserting {run.stale_rows:,} stale rows, VACUUM, CHECKPOINT")
                await prepare_pair(pool, run, figures)
                say(f"pair {repeat}: {run.baseline:.0f} s without the delete")
                without = Window(during=False, start=time.perf_counter() - t_0)
                await asyncio.sleep(run.baseline)
                without.end = time.perf_counter() - t_0
                say(f"pair {repeat}: the routine deletes {run.stale_rows:,} rows")
                during = Window(during=True, start=math.nan)
                peak = await delete_with_routine(run, database, during, t_0, Path(tmp))
                if await pool.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM object WHERE id <= $1)", run.stale_rows
                ):
                    raise SystemExit("the routine's tick ended with stale rows left")
                figures.routine_peak_rss_mb = max(peak, figures.routine_peak_rss_mb)
                windows += [without, during]
                figures.pairs.append(Pair(without, during))
        stop.set()
        await feeder
        for writer in writers:
            writer.close()
        await asyncio.gather(*tasks)
        for window in windows:
            recorder.fill(window)
        q = common_quantile((w.commits for w in windows), together=run.writers)
        for pair in figures.pairs:
            pair.q = q
        figures.flushes = recorder.commits
        figures.failed_flushes = recorder.failures
        figures.load = load_average()
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await pool.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()
    return figures


def print_figures(figures: RoutineFigures) -> None:
    run = figures.run
    print(
        f"inserted {run.stale_rows:,} stale rows in {figures.fill_seconds.label(1, ' s')}, "
        f"VACUUM {Spread.of(figures.vacuums).label(1, ' s')}"
        + ("" if figures.checkpointed else "; no CHECKPOINT (the role may not)")
    )
    print(
        f"{run.writers} batch writers at {run.rate:,.0f} rows/s in all; the routine in batches "
        f"of {run.batch_size:,}, {format_duration(run.batch_pause)} apart; load {figures.load}"
    )
    print(
        f"delete: {figures.delete_seconds.label(1, ' s')}, "
        f"{figures.rows_per_second.label(0, ' rows/s')}, routine CPU "
        f"{figures.routine_cpu_per_row_ms.label(4, ' ms')} per row, peak RSS "
        f"{figures.routine_peak_rss_mb:.0f} MB"
    )
    for number, pair in enumerate(figures.pairs, 1):
        commit_without, commit_during = pair.commit_tails
        ack_without, ack_during = pair.ack_tails
        print(
            f"pair {number}: commit {commit_without.label(1000, ' ms')} without, "
            f"{commit_during.label(1000, ' ms')} during: {pair.ratio:.2f}×; "
            f"ack delay {ack_without.label(1000, ' ms')} / {ack_during.label(1000, ' ms')}: "
            f"{pair.ack_ratio:.2f}×"
        )
    print(
        f"tails from ≥ {figures.fewest_per_writer:,} flushes per writer in every window "
        f"(a stall delays all {run.writers} writers at once)"
    )
    print(
        f"commit latency during / without: {figures.ratios.label(2, '×')} — target ≤ "
        f"{ROUTINE_RATIO:g}×: {figures.verdict}"
    )
    print(
        f"ack delay during / without: {figures.ack_ratios.label(2, '×')} — ≤ "
        f"{ROUTINE_RATIO:g}×: {figures.ack_verdict}"
    )
    print(f"noise: {figures.noise()}")
    if figures.failed_flushes:
        print(f"failed flushes (retried): {figures.failed_flushes}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--stale-rows", type=int, default=RoutineRun.stale_rows)
    parser.add_argument("--rate", type=float, default=RoutineRun.rate, help="rows/s, all writers")
    parser.add_argument(
        "--baseline", type=float, default=RoutineRun.baseline, help="seconds of each window without"
    )
    parser.add_argument("--repeats", type=int, default=RoutineRun.repeats, help="pairs")
    parser.add_argument("--writers", type=int, default=RoutineRun.writers, help="batch writers")
    parser.add_argument(
        "--warmup", type=float, default=RoutineRun.warmup, help="seconds before the first pair"
    )
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
        repeats=args.repeats,
        writers=args.writers,
        batch_size=args.batch_size,
        batch_pause=args.batch_pause,
        warmup=args.warmup,
    )
    print_figures(asyncio.run(routine_at_scale(run, lambda text: print(f"… {text}"))))


if __name__ == "__main__":
    main()
