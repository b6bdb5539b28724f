"""``python -m bench``: every benchmark side by side in one run, written to docs/BENCHMARKS.md.

    python -m bench                      # the full run (about 21 minutes), into docs/
    python -m bench --smoke --output DIR # seconds long, for CI: the command works, end to end

Sections, each a function of its own module (also runnable alone, see each module):
1. acceptance (``bench.producer_bench``), 2. fan-out (``bench.consumer_bench``, saturate),
3. pipeline overhead and the consumer's profile (``bench.consumer_bench`` through a real producer,
``bench.commit_clock``, ``bench.profile_summary``), 4. CPU and memory (from every section),
5. the routine at scale (``bench.routine_bench``), 6. overload (capacity, then 4x it), 7. Redis as
the store (``bench.consumer_bench`` with ``STORE=redis`` against ``STORE=postgres``, alternating,
and ``bench.redis_store_bench``: Redis server CPU per stored id), 8. Pub/Sub as the broker
(``bench.consumer_bench`` with ``BROKER=pubsub`` against Google's emulator and ``BROKER=rabbitmq``,
alternating; informational: the emulator is not the service).

Run it alone on the machine if you can (``flock /tmp/lastseen-heavy.lock python -m bench``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import structlog
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from bench.broker import broker_status
from bench.consumer_bench import Bench, ConsumerFigures, ConsumerRun, launcher
from bench.measure import ROOT, MachineInfo, load_average
from bench.producer_bench import AcceptanceRun
from bench.producer_bench import acceptance as run_acceptance
from bench.profile_summary import summarise
from bench.redis_store_bench import StoreRun, against_postgres
from bench.report import Results, pubsub_summary, write
from bench.routine_bench import RoutineRun, routine_at_scale
from tests.support.pubsub_emulator import running_emulator

Say = Callable[[str, str], None]  # (section, what it does now) -> the progress display
BENCH_ENV = ("BENCH_AMQP_URI", "BENCH_RABBITMQ_NODE", "BENCH_DATABASE_URL")
CONSUMER_NICE = 10  # as in the Procfile: the endpoint wins over a saturated consumer


@dataclass
class Plan:
    acceptance: AcceptanceRun
    fanout: list[int]
    fanout_run: ConsumerRun
    pipeline: ConsumerRun
    routine: RoutineRun
    capacity: ConsumerRun
    overload: ConsumerRun
    stores: ConsumerRun
    store_rounds: int
    redis_store: StoreRun
    redis_store_repeats: int
    brokers: ConsumerRun
    broker_rounds: int
    overload_factor: float = 4.0
    sections: list[str] = field(
        default_factory=lambda: [
            "acceptance",
            "fanout",
            "pipeline",
            "routine",
            "overload",
            "redis",
            "pubsub",
        ]
    )


def full_plan() -> Plan:
    real: dict[str, Any] = {"delay_min": 0.3, "delay_max": 4.3}
    return Plan(
        acceptance=AcceptanceRun(
            duration=10, warmup=2, rate=500, fixed_duration=10, repeat=3, pubsub=True
        ),
        fanout=[100, 400, 2000, 5000, 8000, 12000],  # 12,000: the overload's capacity
        fanout_run=ConsumerRun(duration=20, warmup=6, **real),
        pipeline=ConsumerRun(
            max_consumers=12000,
            rate=3000,
            duration=60,
            warmup=10,
            via_producer=True,
            consumer_nice=CONSUMER_NICE,
            track_commits=True,
            profile_seconds=20,
            **real,
        ),
        routine=RoutineRun(),  # its defaults: the delete long enough for a p95 (issue 25)
        capacity=ConsumerRun(max_consumers=12000, duration=20, warmup=8, **real),
        overload=ConsumerRun(
            max_consumers=12000,
            duration=60,
            warmup=0,
            via_producer=True,
            consumer_nice=CONSUMER_NICE,
            drain=True,
            broker_status=broker_status,
            **real,
        ),
        # The same consumer at 3,000 ids/s with each store, published directly (the producer
        # is the same for both): ~35 s a run, 3 rounds of 2, then ~40 s of store throughput.
        stores=ConsumerRun(
            max_consumers=12000, rate=3000, duration=20, warmup=8, read_back=False, **real
        ),
        store_rounds=3,
        redis_store=StoreRun(seconds=8),
        redis_store_repeats=3,
        # The same consumer at 3,000 ids/s with each broker, published directly: ~20 s a run,
        # 3 rounds of 2 (about 2 minutes with the emulator's start).
        brokers=ConsumerRun(
            max_consumers=12000, rate=3000, duration=12, warmup=5, read_back=False, **real
        ),
        broker_rounds=3,
    )


def smoke_plan() -> Plan:
    short: dict[str, Any] = {"delay_min": 0.02, "delay_max": 0.2}
    return Plan(
        # 4 connections: one message per id at 32 would outrun confirms and fill the spool.
        acceptance=AcceptanceRun(
            duration=1, warmup=0, connections=4, rate=100, fixed_duration=1, pubsub=True
        ),
        fanout=[100],
        fanout_run=ConsumerRun(duration=1, warmup=0.5, **short),
        pipeline=ConsumerRun(
            max_consumers=400,
            rate=600,
            duration=1.5,
            warmup=0.5,
            via_producer=True,
            consumer_nice=CONSUMER_NICE,
            track_commits=True,
            profile_seconds=1,
            **short,
        ),
        routine=RoutineRun(
            stale_rows=20_000, rate=1000, baseline=0.5, repeats=1, writers=2, warmup=0.2
        ),
        capacity=ConsumerRun(max_consumers=100, duration=1, warmup=0.5, **short),
        overload=ConsumerRun(
            max_consumers=100,
            duration=1,
            warmup=0,
            via_producer=True,
            consumer_nice=CONSUMER_NICE,
            drain=True,
            drain_timeout=20,
            broker_status=broker_status,
            **short,
        ),
        stores=ConsumerRun(
            max_consumers=400, rate=600, duration=1.5, warmup=0.5, read_back=False, **short
        ),
        store_rounds=1,
        redis_store=StoreRun(seconds=1),
        redis_store_repeats=1,
        brokers=ConsumerRun(
            max_consumers=400, rate=600, duration=1.5, warmup=0.5, read_back=False, **short
        ),
        broker_rounds=1,
    )


async def run_plan(plan: Plan, results: Results, say: Callable[[str, str], None]) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench_"))
    try:
        for section in plan.sections:
            started = time.monotonic()
            await SECTIONS[section](plan, results, say, workdir)
            results.section_seconds[section] = time.monotonic() - started
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def acceptance(plan: Plan, results: Results, say: Say, _workdir: Path) -> None:
    results.acceptance_connections = plan.acceptance.connections
    results.acceptance = await run_acceptance(
        plan.acceptance, lambda text: say("1 acceptance", text)
    )


async def fanout(plan: Plan, results: Results, say: Say, _workdir: Path) -> None:
    for max_consumers in plan.fanout:
        run = replace(plan.fanout_run, max_consumers=max_consumers)
        label = f"2 fan-out {max_consumers}"
        results.fanout.append(await Bench(run, partial(say, label)).run())


async def pipeline(plan: Plan, results: Results, say: Say, workdir: Path) -> None:
    run = replace(plan.pipeline, profile_path=workdir / "consumer.pyspy.txt")
    results.pipeline = await Bench(run, lambda t: say("3 pipeline", t)).run()
    if results.pipeline.profile_path is not None:
        results.profile = summarise(results.pipeline.profile_path.read_text())


async def routine(plan: Plan, results: Results, say: Say, _workdir: Path) -> None:
    results.routine = await routine_at_scale(plan.routine, lambda t: say("5 routine", t))


async def overload(plan: Plan, results: Results, say: Say, _workdir: Path) -> None:
    # One consumer's capacity: the fan-out point at the same MAX_CONSUMERS, or a run of its own.
    same = [f for f in results.fanout if f.run.max_consumers == plan.capacity.max_consumers]
    results.capacity = (
        same[0] if same else await Bench(plan.capacity, lambda t: say("6 capacity", t)).run()
    )
    results.overload_factor = plan.overload_factor
    results.broker_before = await asyncio.to_thread(broker_status)
    results.overload = await Bench(
        replace(plan.overload, rate=plan.overload_factor * results.capacity.rate),
        lambda t: say("6 overload", t),
    ).run()
    results.broker_after = await asyncio.to_thread(broker_status)


def _say_store(say: Say, section: str, store: str, text: str) -> None:
    say(section, f"{store}: {text}")


async def redis(plan: Plan, results: Results, say: Say, _workdir: Path) -> None:
    # Rounds alternate which store goes first, so a drift in the machine's load over the
    # section does not favour one store.
    for number in range(plan.store_rounds):
        order = ("postgres", "redis") if number % 2 == 0 else ("redis", "postgres")
        pair: dict[str, ConsumerFigures] = {}
        for store in order:
            label = f"7 redis {number + 1}/{plan.store_rounds}"
            progress = partial(_say_store, say, label, store)
            pair[store] = await Bench(replace(plan.stores, store=store), progress).run()
        results.store_rounds.append((pair["postgres"], pair["redis"]))
    say(
        "7 redis store",
        f"Redis server CPU per id, and the client's beside PostgreSQL's, "
        f"{plan.redis_store_repeats} repeats",
    )
    results.redis_store, results.postgres_store = await against_postgres(
        plan.redis_store, plan.redis_store_repeats
    )


async def pubsub(plan: Plan, results: Results, say: Say, _workdir: Path) -> None:
    # One emulator of the section's own for every Pub/Sub run (it starts in seconds, a JVM);
    # rounds alternate which broker goes first, as in section 7.
    section = "8 pubsub"
    say(section, "starting the Pub/Sub emulator (not the service)")
    with running_emulator(launcher()) as emulator:
        for number in range(plan.broker_rounds):
            order = ("rabbitmq", "pubsub") if number % 2 == 0 else ("pubsub", "rabbitmq")
            pair: dict[str, ConsumerFigures] = {}
            for broker in order:
                label = f"{section} {number + 1}/{plan.broker_rounds}"
                progress = partial(_say_store, say, label, broker)
                run = replace(plan.brokers, broker=broker)
                pair[broker] = await Bench(run, progress, emulator).run()
            results.broker_rounds.append((pair["rabbitmq"], pair["pubsub"]))


SECTIONS: dict[str, Callable[[Plan, Results, Say, Path], Awaitable[None]]] = {
    "acceptance": acceptance,
    "fanout": fanout,
    "pipeline": pipeline,
    "routine": routine,
    "overload": overload,
    "redis": redis,
    "pubsub": pubsub,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="seconds long, for CI")
    parser.add_argument("--output", type=Path, default=ROOT / "docs", help="where to write")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated sections: acceptance,fanout,pipeline,routine,overload,redis,pubsub",
    )
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    plan = smoke_plan() if args.smoke else full_plan()
    if args.only:
        plan.sections = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = sorted(set(plan.sections) - set(SECTIONS))
        if unknown:
            parser.error(
                f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}"
            )
    if shutil.which("wrk"):
        plan.acceptance.wrk = shutil.which("wrk")
    settings = [f"{name}={os.environ[name]}" for name in BENCH_ENV if os.environ.get(name)]
    words = [*settings, "python", "-m", "bench", *(sys.argv[1:] if argv is None else argv)]
    results = Results(MachineInfo.now(), shlex.join(words), args.smoke)
    results.broker_before = broker_status()
    started = time.monotonic()
    console = Console(stderr=True)
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.fields[section]:<18}"),
        BarColumn(bar_width=20),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("starting", total=len(plan.sections), section="")
        seen: list[str] = []

        def say(section: str, text: str) -> None:
            head = section.split()[0]
            if head not in seen:
                seen.append(head)
                progress.update(task, completed=len(seen) - 1)
            progress.update(task, description=text, section=section)

        asyncio.run(run_plan(plan, results, say))
        progress.update(task, completed=len(plan.sections), description="writing the report")
    results.elapsed_s = time.monotonic() - started
    results.load_after = load_average()
    path = write(results, args.output)
    if results.broker_rounds:
        console.print(pubsub_summary(results), soft_wrap=True)
    console.print(f"wrote {path} and {path.parent / 'benchmarks'}/*.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
