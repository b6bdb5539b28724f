"""``docs/BENCHMARKS.md`` and its plots, from the figures of one ``python -m bench`` run."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from bench.consumer_bench import PARTS, ConsumerFigures
from bench.measure import ADMIN_DSN, AMQP_URI, MachineInfo, percentile
from bench.producer_bench import BARE, Figures, Target, fixed_p99_ms, vs_bare
from bench.profile_summary import ProfileSummary
from bench.redis_store_bench import ClientFigures, StoreFigures, client_ratios
from bench.routine_bench import ROUTINE_RATIO, RoutineFigures
from bench.verdicts import Spread, at, common_quantile, judge, quantile
from common.durations import format_duration

PLOTS = "benchmarks"  # folder next to BENCHMARKS.md
DPI = 80

# The targets (2-core machine, everything on it).
CONSUMER_MS_PER_ID = 0.075
PRODUCER_VS_BARE = 0.6
PRODUCER_P99_MS = 25.0
OVERHEAD_P99_MS = 250.0
OVERLOAD_RSS_MB = 200.0
DRAIN_VS_CAPACITY = 0.9
# Issue 20: the consumer with STORE=redis costs no more CPU per id than with PostgreSQL, and one
# Redis core stores at least 100,000 ids/s (so at most 10 us of Redis CPU per id).
REDIS_VS_POSTGRES = 1.0
REDIS_IDS_PER_CORE = 100_000
REDIS_US_PER_ID = 1e6 / REDIS_IDS_PER_CORE


@dataclass
class Results:
    machine: MachineInfo
    command: str
    smoke: bool
    load_after: str = ""
    elapsed_s: float = 0.0
    acceptance: list[tuple[Target, Figures]] = field(default_factory=list)
    acceptance_connections: int = 32
    fanout: list[ConsumerFigures] = field(default_factory=list)
    pipeline: ConsumerFigures | None = None
    profile: ProfileSummary | None = None
    routine: RoutineFigures | None = None
    capacity: ConsumerFigures | None = None
    overload: ConsumerFigures | None = None
    overload_factor: float = 4.0
    broker_before: dict[str, object] = field(default_factory=dict)
    broker_after: dict[str, object] = field(default_factory=dict)
    section_seconds: dict[str, float] = field(default_factory=dict)
    # Issue 20: (STORE=postgres, STORE=redis) per round, and the Redis store's throughput.
    store_rounds: list[tuple[ConsumerFigures, ConsumerFigures]] = field(default_factory=list)
    redis_store: list[StoreFigures] = field(default_factory=list)
    # The same writes through PostgresStore, one per redis_store run (alternating).
    postgres_store: list[ClientFigures] = field(default_factory=list)
    # Issue 21: (BROKER=rabbitmq, BROKER=pubsub against Google's emulator) per round.
    broker_rounds: list[tuple[ConsumerFigures, ConsumerFigures]] = field(default_factory=list)


def ms(value: float) -> str:
    return "–" if math.isnan(value) else f"{1000 * value:,.1f}"


def num(value: float, digits: int = 0) -> str:
    return "–" if math.isnan(value) else f"{value:,.{digits}f}"


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> list[str]:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _save(figure: Figure, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)


def plot_acceptance(results: Results, path: Path) -> None:
    names = [t.name.replace("producer (", "producer\n(") for t, _ in results.acceptance]
    figures = [f for _, f in results.acceptance]
    figure, (rate_axis, latency_axis) = plt.subplots(1, 2, figsize=(8, 3.2))
    bars = rate_axis.bar(names, [f.rate for f in figures], color=["#999", "#3a7", "#c63"])
    rate_axis.bar_label(bars, labels=[f"{f.rate:,.0f}" for f in figures], fontsize=8)
    rate_axis.set_ylabel("callbacks/s (200 ids)")
    rate_axis.set_title("saturation", fontsize=9)
    x = range(len(figures))
    latency_axis.bar([i - 0.2 for i in x], [f.fixed_p50_ms for f in figures], 0.4, label="p50")
    latency_axis.bar([i + 0.2 for i in x], [f.fixed_p99_ms for f in figures], 0.4, label="p99")
    latency_axis.set_xticks(list(x), names)
    latency_axis.set_yscale("log")
    latency_axis.set_ylabel("ms")
    latency_axis.set_title("latency at a fixed rate (open loop)", fontsize=9)
    latency_axis.legend(fontsize=8)
    for axis in (rate_axis, latency_axis):
        axis.tick_params(labelsize=7)
    _save(figure, path)


def plot_fanout(results: Results, path: Path) -> None:
    points = results.fanout
    figure, axis = plt.subplots(figsize=(6, 3.5))
    xs = [f.run.max_consumers for f in points]
    axis.plot(
        xs, [f.run.ceiling for f in points], "--", color="#999", label="Little's law N / 2.3 s"
    )
    axis.plot(xs, [f.rate for f in points], "o-", color="#3a7", label="one consumer, measured")
    for f in points:
        axis.annotate(
            f"{f.rate:,.0f}",
            (f.run.max_consumers, f.rate),
            fontsize=7,
            textcoords="offset points",
            xytext=(4, -10),
        )
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("MAX_CONSUMERS (status requests in flight)")
    axis.set_ylabel("ids/s")
    axis.legend(fontsize=8)
    axis.grid(True, which="both", alpha=0.3)
    _save(figure, path)


def plot_cdf(values: list[float], lower: list[float], path: Path, title: str) -> None:
    figure, axis = plt.subplots(figsize=(6, 3.5))
    for data, label, style in ((values, "upper bound (used)", "-"), (lower, "lower bound", ":")):
        ordered = sorted(1000 * v for v in data)
        if ordered:
            axis.plot(
                ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], style, label=label
            )
    axis.axvline(
        OVERHEAD_P99_MS, color="#c63", alpha=0.5, label=f"target p99 {OVERHEAD_P99_MS:.0f} ms"
    )
    axis.axhline(0.99, color="#999", alpha=0.4, lw=0.8)
    axis.set_xlabel("ms")
    axis.set_ylabel("fraction of stored rows")
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=8)
    axis.grid(True, alpha=0.3)
    _save(figure, path)


def plot_routine(figures: RoutineFigures, path: Path) -> None:
    figure, axis = plt.subplots(figsize=(6, 3))
    axis.plot(
        [t for t, _ in figures.flushes],
        [1000 * v for _, v in figures.flushes],
        ".",
        ms=2,
        color="#3a7",
    )
    for number, pair in enumerate(figures.pairs):
        axis.axvspan(
            pair.during.start,
            pair.during.end,
            color="#c63",
            alpha=0.15,
            label=f"routine deleting {figures.run.stale_rows:,} rows" if number == 0 else None,
        )
    axis.set_xlabel("s")
    axis.set_ylabel("commit latency, ms")
    axis.set_yscale("log")
    axis.legend(fontsize=8)
    _save(figure, path)


def plot_overload(figures: ConsumerFigures, path: Path) -> None:
    figure, (rate_axis, memory_axis) = plt.subplots(2, 1, figsize=(6, 4.2), sharex=True)
    timeline = [p for p in figures.timeline if not math.isnan(p[1])]
    rate_axis.plot(
        [t for t, _, _ in timeline], [r for _, r, _ in timeline], color="#3a7", label="ids/s served"
    )
    rate_axis.axhline(figures.run.rate, color="#c63", ls="--", label="ids/s offered")
    rate_axis.set_ylabel("ids/s")
    depth_axis = rate_axis.twinx()
    depth_axis.plot(
        [t for t, _, _ in figures.timeline],
        [d for _, _, d in figures.timeline],
        color="#999",
        label="backlog (messages)",
    )
    depth_axis.set_ylabel("messages", fontsize=8)
    rate_axis.legend(fontsize=7, loc="upper left")
    depth_axis.legend(fontsize=7, loc="upper right")
    memory_axis.plot(
        [t for t, _ in figures.rss_samples], [m for _, m in figures.rss_samples], color="#37a"
    )
    memory_axis.axhline(OVERLOAD_RSS_MB, color="#c63", ls="--", alpha=0.6)
    memory_axis.set_ylabel("consumer RSS, MB")
    memory_axis.set_xlabel("s since the measured window began (the offer stops at its end)")
    _save(figure, path)


def write(results: Results, output: Path) -> Path:
    """Write BENCHMARKS.md and its PNGs into ``output``; return the markdown's path."""
    plots = output / PLOTS
    plots.mkdir(parents=True, exist_ok=True)
    lines = _header(results)
    lines += _targets(results)
    if results.acceptance:
        plot_acceptance(results, plots / "acceptance.png")
        lines += _acceptance(results)
    if results.fanout:
        plot_fanout(results, plots / "fanout.png")
        lines += _fanout(results)
    if results.pipeline is not None:
        plot_cdf(
            results.pipeline.overhead,
            results.pipeline.overhead_lower,
            plots / "pipeline_overhead.png",
            f"pipeline overhead per stored row at {results.pipeline.run.rate:,.0f} ids/s",
        )
        lines += _pipeline(results)
    lines += _costs(results)
    if results.profile is not None:
        lines += _profile(results)
    if results.routine is not None:
        plot_routine(results.routine, plots / "routine.png")
        lines += _routine(results)
    if results.overload is not None:
        plot_overload(results.overload, plots / "overload.png")
        lines += _overload(results)
    if results.store_rounds or results.redis_store:
        lines += _redis(results)
    if results.broker_rounds:
        lines += _pubsub(results)
    notes = plots / "NOTES.md"
    if notes.exists():  # hand-written reading of a run, kept across runs (it carries its date)
        lines += ["## Reading the run (hand-written: benchmarks/NOTES.md)", "", notes.read_text()]
    path = output / "BENCHMARKS.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _header(results: Results) -> list[str]:
    m = results.machine
    versions = ", ".join(f"{name} {version}" for name, version in m.versions.items())
    smoke = (
        "\n> **Smoke run** (seconds long, short delays): checks that the command works; its "
        "figures mean nothing.\n"
        if results.smoke
        else ""
    )
    return [
        "# Benchmarks",
        "",
        "Written by `python -m bench` — every figure and plot below comes from this one run.",
        smoke,
        f"- command: `{results.command}`",
        f"- date: {m.date}; commit `{m.commit}`; the run took {results.elapsed_s / 60:.1f} min ("
        + ", ".join(f"{name} {s:.0f} s" for name, s in results.section_seconds.items())
        + ")",
        f"- machine: {m.cores} cores ({m.cpu}), {m.memory_gb:.1f} GB memory; load average "
        f"(1/5/15 min) {m.load_before} before, {results.load_after} after",
        f"- versions: {versions}; broker RabbitMQ {results.broker_before.get('version', '?')} "
        f"(`{urlsplit(AMQP_URI).netloc.rsplit('@', 1)[-1]}`), PostgreSQL "
        f"`{urlsplit(ADMIN_DSN).netloc.rsplit('@', 1)[-1]}`",
        *(
            [
                f"- the broker is a RabbitMQ node of the benchmark's own (`{node}`, default "
                "limits, same installation as the shared one), so other sessions' queues and "
                "fault tests on the shared node neither disturb nor are disturbed by the run"
            ]
            if (node := os.environ.get("BENCH_RABBITMQ_NODE"))
            else []
        ),
        "- the services run with their defaults unless a section says otherwise (the consumer's "
        "`STATUS_CLIENT=httptools`, the producer's `PUBLISH_MODE=pipeline`); the stand-in "
        "status API is `bench/consumer_status_server.py` (a plain asyncio protocol on uvloop, "
        "so that it is not the bottleneck: its CPU per id is in each table)",
        "- everything on this one machine: RabbitMQ, PostgreSQL, the services, the stand-in "
        "status API and the load generators, and possibly other work (the load averages above "
        "say how busy it was): absolute rates and latencies are noisy; CPU per id, peak memory "
        "and the ratios are the robust figures.",
        "",
    ]


def _row(
    name: str, goal: str, statistic: str, spread: Spread, target: float, at_most: bool, unit: str
) -> tuple[str, str, str, str, str]:
    digits = 3 if unit == " ms" and target < 1 else (2 if unit in ("", "×", " µs") else 0)
    found = judge(spread, target, at_most=at_most)
    return (name, goal, statistic, spread.label(digits, unit), f"**{found}**")


def _targets(results: Results) -> list[str]:
    rows = []
    if results.pipeline is not None:
        p = results.pipeline
        costs = Spread.of(p.cpu_ms_per_id_by_part(PARTS))
        rows.append(
            _row(
                f"consumer CPU per id at {p.run.rate:,.0f} ids/s",
                f"≤ {CONSUMER_MS_PER_ID} ms",
                f"CPU / ids served, {costs.repeats} parts of the {p.window:.0f} s window",
                costs,
                CONSUMER_MS_PER_ID,
                True,
                " ms",
            )
        )
        parts = p.overhead_by_part(PARTS)
        q = common_quantile(parts)
        overheads = Spread.of(1000 * at(part, q).value for part in parts)
        fewest = min((len(part) for part in parts), default=0)
        rows.append(
            _row(
                "pipeline overhead per stored row",
                f"p99 ≤ {OVERHEAD_P99_MS:.0f} ms",
                f"{at(parts[0] if parts else [], q).name} of ≥ {fewest:,} rows, per part",
                overheads,
                OVERHEAD_P99_MS,
                True,
                " ms",
            )
        )
    if results.acceptance:
        column = next(
            (t.column for t, _ in results.acceptance if t.column.startswith("producer (IDS")),
            None,
        )
        if column is not None:
            ratio = vs_bare(results.acceptance, column)
            rows.append(
                _row(
                    "producer rate vs bare FastAPI",
                    f"≥ {PRODUCER_VS_BARE}",
                    "callbacks/s ratio, round by round (alternating)",
                    ratio,
                    PRODUCER_VS_BARE,
                    False,
                    "",
                )
            )
            tails, samples = fixed_p99_ms(results.acceptance, column)
            fixed = next(f.fixed_rate for t, f in results.acceptance if t.column == column)
            rows.append(
                _row(
                    f"producer latency at {fixed:,.0f} callbacks/s",
                    f"p99 ≤ {PRODUCER_P99_MS:.0f} ms",
                    f"open-loop tail of ≥ {samples:,} callbacks, per round",
                    tails,
                    PRODUCER_P99_MS,
                    True,
                    " ms",
                )
            )
    if results.routine is not None and results.routine.pairs:
        r = results.routine
        without, _ = r.pairs[0].commit_tails
        fewest = min(min(len(p.without.commits), len(p.during.commits)) for p in r.pairs)
        rows.append(
            _row(
                f"commit latency during the {r.run.stale_rows:,}-row delete vs without",
                f"p99 ≤ {ROUTINE_RATIO:.0f}×",
                f"{without.name} of ≥ {fewest:,} flushes (≥ {r.fewest_per_writer:,} per writer: "
                "what a stall-moved tail supports), per pair",
                r.ratios,
                ROUTINE_RATIO,
                True,
                "×",
            )
        )
        rows.append(
            _row(
                f"ack delay during the {r.run.stale_rows:,}-row delete vs without (what a "
                "consumer's messages wait for their commit)",
                f"≤ {ROUTINE_RATIO:.0f}×",
                f"{r.pairs[0].ack_tails[0].name} of the rows' ack delays, per pair",
                r.ack_ratios,
                ROUTINE_RATIO,
                True,
                "×",
            )
        )
    if results.overload is not None:
        rows.append(_overload_verdict(results, results.overload))
    if results.store_rounds:
        rate = results.store_rounds[0][0].run.rate
        rows.append(
            _row(
                f"consumer CPU per id at {rate:,.0f} ids/s, STORE=redis vs STORE=postgres",
                f"≤ {REDIS_VS_POSTGRES:g}×",
                "ratio of CPU / ids served, round by round (alternating)",
                redis_vs_postgres(results),
                REDIS_VS_POSTGRES,
                True,
                "×",
            )
        )
    if results.redis_store and results.postgres_store:
        run = results.redis_store[0].run
        rows.append(
            _row(
                "… the part of it that differs: the consumer's store write, CPU per stored id, "
                "Redis vs PostgreSQL",
                f"≤ {REDIS_VS_POSTGRES:g}×",
                f"client CPU per id, the same {run.writers} writers × {run.batch}-id batches "
                "through each store, per pair (alternating)",
                client_ratios(results.redis_store, results.postgres_store),
                REDIS_VS_POSTGRES,
                True,
                "×",
            )
        )
    if results.redis_store:
        run = results.redis_store[0].run
        rows.append(
            _row(
                f"Redis CPU per stored id (one core ≥ {REDIS_IDS_PER_CORE:,} ids/s)",
                f"≤ {REDIS_US_PER_ID:g} µs",
                f"redis-server CPU / ids stored, {run.writers} writers × {run.batch}-id batches, "
                "per run",
                Spread.of(f.server_us_per_id for f in results.redis_store),
                REDIS_US_PER_ID,
                True,
                " µs",
            )
        )
    return [
        "## Targets (issues 14 and 20), judged on repeats (issue 25)",
        "",
        "Each figure is measured several times in this run (alternating where it is a pair): the "
        "table gives the median and the range. **met** when every repeat meets the goal, "
        "**missed** when none does, **at the line** otherwise; one run gives no verdict. A tail "
        "is reported only as deep as its samples support (p99 from ≥ 2,000 observations, p95 "
        "from ≥ 400: bench/verdicts.py), so the statistic column names what was measured.",
        "",
        *table(("target", "goal", "statistic", "median (range, repeats)", "verdict"), rows),
        "",
        *_noise(results),
    ]


def redis_vs_postgres(results: Results) -> Spread:
    """The consumer's CPU per id with STORE=redis over that with STORE=postgres, per round."""
    return Spread.of(
        r.costs["consumer"].cpu_ms_per_id / p.costs["consumer"].cpu_ms_per_id
        for p, r in results.store_rounds
    )


def _noise(results: Results) -> list[str]:
    lines = []
    if results.routine is not None and results.routine.pairs:
        lines.append(f"- routine: {results.routine.noise()}.")
    lines.append(
        f"- the machine: load average {results.machine.load_before} before the run and "
        f"{results.load_after} after; everything shares its {results.machine.cores} cores, so "
        "scheduling is the noise that dominates the latency tails, and CPU per id the "
        "figure it disturbs least."
    )
    return ["Noise:", "", *lines, ""]


def _as_list(value: object) -> list[object]:
    return list(value) if isinstance(value, list) else []


def _overload_checks(results: Results, o: ConsumerFigures) -> dict[str, bool]:
    peak = max((m for _, m in o.rss_samples), default=float("nan"))
    capacity = results.capacity.rate if results.capacity else float("nan")
    alarms = [
        s.get("alarms")
        for s in (results.broker_before, *o.broker_samples, results.broker_after)
        if s.get("alarms")
    ]
    return {
        "0 callbacks missed": o.callbacks_failed == 0,
        f"consumer RSS ≤ {OVERLOAD_RSS_MB:.0f} MB": peak <= OVERLOAD_RSS_MB,
        "no broker alarm, publishers never blocked": not alarms
        and o.producer_states <= {"connected"},
        f"drain ≥ {DRAIN_VS_CAPACITY:.0%} of capacity": o.drain_rate
        >= DRAIN_VS_CAPACITY * capacity,
    }


def _overload_verdict(results: Results, o: ConsumerFigures) -> tuple[str, str, str, str, str]:
    checks = _overload_checks(results, o)
    failed = [name for name, ok in checks.items() if not ok]
    return (
        f"overload ({results.overload_factor:g}× one consumer, {o.window:.0f} s) stays graceful",
        "; ".join(checks),
        "four checks of counts and limits, one run (4 min: not repeated)",
        "all hold" if not failed else "failed: " + "; ".join(failed),
        verdict(not failed),
    )


def _acceptance(results: Results) -> list[str]:
    bare = {t.round: f.rate for t, f in results.acceptance if t.column == BARE}
    generator = results.acceptance[0][1].generator
    rows = [
        (
            t.name,
            f"{f.rate:,.0f}",
            f"{f.rate / bare[t.round]:.2f}" if t.round in bare else "–",
            f"{f.p50_ms:.1f} / {f.p99_ms:.1f}",
            f"{f.fixed_rate:,.0f}",
            f"{f.fixed_p50_ms:.1f} / {f.fixed_p99_ms:.1f} / {f.fixed_max_ms:.0f}",
            f"{len(f.latencies):,}",
            str(f.fixed_failed),
            f.durable_check,
        )
        for t, f in results.acceptance
    ]
    return [
        "## 1. Acceptance: 200-id callbacks",
        "",
        f"Saturation with {generator} ({results.acceptance_connections} keep-alive connections, "
        "64 bodies of 200 distinct random ids); latency from an open-loop generator at a fixed "
        "rate (request *i* due at start + i/rate, latency counted from then: no coordinated "
        "omission). Rounds alternate bare FastAPI and the producer (#1, #2, …), and each "
        "producer round is compared with the bare round next to it. The producer's answers are "
        "durable (publisher confirms); the count of messages in its queue is checked after each "
        "run.",
        "",
        *table(
            (
                "target",
                "callbacks/s",
                "vs bare",
                "p50 / p99 ms",
                "fixed rate /s",
                "p50 / p99 / max ms",
                "n",
                "failed",
                "durable",
            ),
            rows,
        ),
        "",
        f"![acceptance]({PLOTS}/acceptance.png)",
        "",
    ]


def _fanout(results: Results) -> list[str]:
    rows = [
        (
            f"{f.run.max_consumers:,}",
            f"{f.rate:,.0f}",
            f"{f.run.ceiling:,.0f}",
            f"{100 * f.rate / f.run.ceiling:.0f} %",
            f"{f.peak_in_flight:,}",
            f"{f.costs['consumer'].cpu_ms_per_id:.3f}",
            f"{f.costs['consumer'].peak_rss_mb:.0f}",
        )
        for f in results.fanout
    ]
    run = results.fanout[0].run
    return [
        "## 2. Fan-out: one consumer against Little's law",
        "",
        f"One `python -m consumer`, a backlog larger than the run queued first, the status API "
        f"answering after {run.delay_min}–{run.delay_max} s (uniform, mean "
        f"{(run.delay_min + run.delay_max) / 2:.1f} s); ids/s is the status API's count over "
        f"{run.duration:.0f} s after a {run.warmup:.0f} s warm-up. The ceiling is "
        "MAX_CONSUMERS / mean delay.",
        "",
        *table(
            (
                "MAX_CONSUMERS",
                "ids/s",
                "ceiling",
                "of ceiling",
                "peak in flight",
                "CPU ms/id",
                "peak RSS MB",
            ),
            rows,
        ),
        "",
        f"![fan-out]({PLOTS}/fanout.png)",
        "",
    ]


def _pipeline(results: Results) -> list[str]:
    p = results.pipeline
    assert p is not None
    o, lo = p.overhead, p.overhead_lower
    return [
        f"## 3. Pipeline overhead per stored row at {p.run.rate:,.0f} ids/s",
        "",
        f"Callbacks of 200 new ids sent to `python -m producer` open loop ({p.run.rate / 200:g}/s),"
        f" one consumer (`MAX_CONSUMERS={p.run.max_consumers}`), the stand-in status API. For "
        "each online id stored from a callback sent in the "
        f"{p.window:.0f} s window: **(commit time − callback sent) − that id's status delay** — "
        "queueing, HTTP, batching and the commit; what the suite adds to the status API's own "
        "wait.",
        "",
        "How the commit time is known, without a trigger and without reconfiguring the server "
        "(`track_commit_timestamp` is off): `bench/commit_clock.py` takes "
        "`pg_current_snapshot()` every 5 ms on a connection and thread of its own; a row's "
        "`xmin` (its inserting transaction, one per consumer batch) committed after the last "
        "snapshot that showed it in progress was sent and before the first that showed it "
        "finished was answered. The upper end is used (conservative); the lower end gives the "
        "lower bound. The status delay is a hash of the id (`status_delay`), so it is known "
        'exactly per row. "Callback sent" is when the load generator sent it, at most a '
        "fraction of a millisecond before the producer stamps `received_at`.",
        "",
        *table(
            ("", "p50 ms", "p99 ms", "max ms", "rows"),
            [
                (
                    "overhead (upper bound)",
                    ms(percentile(o, 0.5)),
                    ms(percentile(o, 0.99)),
                    ms(max(o, default=float("nan"))),
                    f"{len(o):,}",
                ),
                (
                    "overhead (lower bound)",
                    ms(percentile(lo, 0.5)),
                    ms(percentile(lo, 0.99)),
                    ms(max(lo, default=float("nan"))),
                    f"{len(lo):,}",
                ),
                (
                    "… of which up to the answer (delivery, waiting for a slot, HTTP)",
                    ms(percentile(p.to_answer, 0.5)),
                    ms(percentile(p.to_answer, 0.99)),
                    ms(max(p.to_answer, default=float("nan"))),
                    "",
                ),
                (
                    "… of which after it (batching, the commit)",
                    ms(percentile(p.to_commit, 0.5)),
                    ms(percentile(p.to_commit, 0.99)),
                    ms(max(p.to_commit, default=float("nan"))),
                    "",
                ),
                (
                    "commit-time bracket width",
                    ms(percentile(p.commit_uncertainty, 0.5)),
                    ms(percentile(p.commit_uncertainty, 0.99)),
                    ms(max(p.commit_uncertainty, default=float("nan"))),
                    "",
                ),
                (
                    "freshness: answered − sent",
                    ms(percentile(p.freshness, 0.5)),
                    ms(percentile(p.freshness, 0.99)),
                    ms(max(p.freshness, default=float("nan"))),
                    f"{len(p.freshness):,}",
                ),
            ],
        ),
        "",
        f"Served {p.rate:,.0f} ids/s of {p.run.rate:,.0f} offered; largest backlog "
        f"{p.max_backlog} messages; callbacks: {p.callbacks_sent:,} sent, "
        f"{p.callbacks_failed} missed, p99 {ms(percentile(p.callback_latency, 0.99))} ms.",
        "",
        f"![pipeline overhead CDF]({PLOTS}/pipeline_overhead.png)",
        "",
    ]


def _cost_rows(label: str, figures: ConsumerFigures) -> list[tuple[str, ...]]:
    return [
        (
            label,
            name,
            f"{cost.cpu_ms_per_id:.3f}",
            f"{cost.cpu_seconds:.1f} ({cost.cpu_seconds / figures.window:.0%} of a core)",
            num(cost.peak_rss_mb),
        )
        for name, cost in figures.costs.items()
    ]


def _costs(results: Results) -> list[str]:
    rows: list[tuple[str, ...]] = []
    if results.pipeline is not None:
        rows += _cost_rows(f"pipeline, {results.pipeline.run.rate:,.0f} ids/s", results.pipeline)
    if results.overload is not None:
        rows += _cost_rows(
            f"overload, {results.overload.run.rate:,.0f} ids/s offered", results.overload
        )
    if results.fanout:
        last = results.fanout[-1]
        rows += [
            row
            for row in _cost_rows(f"fan-out, MAX_CONSUMERS={last.run.max_consumers:,}", last)
            if row[1] == "consumer"
        ]
    for target, f in results.acceptance:
        rows.append(
            (
                f"acceptance, {f.fixed_rate:,.0f} callbacks/s",
                target.name,
                f"{f.cpu_ms_per_callback / 200:.4f} ({f.cpu_ms_per_callback:.2f} per callback)",
                "",
                num(f.peak_rss_mb),
            )
        )
    if results.routine is not None:
        r = results.routine
        rows.append(
            (
                f"routine, {r.run.stale_rows:,} rows deleted, {len(r.pairs)} times",
                "routine",
                f"{r.routine_cpu_per_row_ms.label(4)} per row",
                f"{sum(p.during.routine_cpu_seconds for p in r.pairs):.1f}",
                num(r.routine_peak_rss_mb),
            )
        )
    return [
        "## 4. CPU per id and peak memory of each service",
        "",
        "CPU is user + system time from `/proc/<pid>/stat` over each measured window, divided by "
        "the ids the status API answered in it (under overload fewer are answered than offered: "
        'read the share of a core there); peak memory is `VmHWM`. "load generator" is the '
        "benchmark process itself (callback sender, stats polling, the commit clock). The status "
        "API is the stand-in; the broker and the database are shared with other work and not "
        "counted.",
        "",
        *table(("load", "process", "CPU ms per id", "CPU s", "peak RSS MB"), rows),
        "",
    ]


def _profile(results: Results) -> list[str]:
    profile = results.profile
    p = results.pipeline
    assert profile is not None and p is not None
    sampled_s = profile.samples / 200
    return [
        "## Where the consumer's time goes",
        "",
        f"`py-spy record --native --rate 200` on the consumer for {p.run.profile_seconds:.0f} s "
        f"while the {p.run.rate:,.0f} ids/s load went on (after the measured window: sampling "
        f"pauses the process briefly). {profile.samples:,} busy samples (≈ {sampled_s:.1f} s at "
        f"200 Hz; the consumer used {p.profile_cpu_seconds:.1f} s of CPU meanwhile) and "
        f"{profile.idle_samples:,} idle ones (waiting in `epoll_wait`) left out. Each sample is "
        "charged to the innermost frame that belongs to a known layer "
        "(`bench/profile_summary.py`); interpreter internals go to the layer that called them.",
        "",
        *table(
            ("layer", "share of CPU"),
            [(name, f"{profile.share(count):.1f} %") for name, count in profile.layers],
        ),
        "",
        "Top of the stack (self time):",
        "",
        *table(
            ("frame", "share"),
            [(f"`{name}`", f"{profile.share(count):.1f} %") for name, count in profile.self_top],
        ),
        "",
        "Our functions, inclusive (time with the function on the stack):",
        "",
        *table(
            ("function", "share"),
            [
                (f"`{name}`", f"{profile.share(count):.1f} %")
                for name, count in profile.consumer_inclusive
            ],
        ),
        "",
    ]


def _routine(results: Results) -> list[str]:
    r = results.routine
    assert r is not None
    rows = []
    for number, pair in enumerate(r.pairs, 1):
        for name, window, commit, ack in (
            ("without", pair.without, pair.commit_tails[0], pair.ack_tails[0]),
            ("during", pair.during, pair.commit_tails[1], pair.ack_tails[1]),
        ):
            rows.append(
                (
                    f"{number} {name}",
                    f"{window.seconds:.1f}",
                    ms(quantile(window.commits, 0.5)),
                    commit.label(1000),
                    ack.label(1000),
                    ms(max(window.commits, default=float("nan"))),
                )
            )
    q = r.pairs[0].commit_tails[0].name if r.pairs else "–"
    return [
        "## 5. The routine at scale",
        "",
        f"{r.run.writers} of the consumer's own batch writers (500 rows / 50 ms) fed "
        f"{r.run.rate:,.0f} new rows/s in all, for the whole run. {len(r.pairs)} pairs, each from "
        f"the same start: {r.run.stale_rows:,} rows last seen a day ago inserted "
        f"({r.fill_seconds.label(1, ' s')}), `VACUUM (ANALYZE)` "
        f"({Spread.of(r.vacuums).label(1, ' s')}: autovacuum's work on a deployment; this "
        "PostgreSQL runs with `autovacuum = off`, and without it each delete scanned the earlier "
        "pairs' dead index entries and slowed pair by pair, 13 → 30 → 39 s) and "
        + ("`CHECKPOINT`" if r.checkpointed else "no `CHECKPOINT` (the role may not run it)")
        + f"; then {r.run.baseline:.0f} s **without** the delete, then **during** it: "
        f"`python -m routine` (batches of {r.run.batch_size:,}, "
        f"{format_duration(r.run.batch_pause)} apart), the window running from its "
        "`routine_started` log line to the tick that deleted the stale rows. Delete: "
        f"{r.delete_seconds.label(1, ' s')}, {r.rows_per_second.label(0, ' rows/s')}, the "
        f"routine's CPU {r.routine_cpu_per_row_ms.label(4, ' ms')} per row.",
        "",
        "What a consumer notices: the **commit latency** of each flush (its upsert statement), "
        "and the **ack delay** of each row (from reaching the writer to its commit, after which "
        "its message is acked). Both are read at the deepest quantile the flushes *per writer* "
        f"support ({q}, from ≥ {r.fewest_per_writer:,} per writer in every window): a stall "
        "(the scheduler on shared cores, a WAL flush behind the delete's) delays every writer's "
        "flush at once, so the writers' latencies are one observation of it, not one each. The "
        "p99 of ~3,200 flushes of a 15 s window that this section judged before rested on 3–7 "
        "such stalls, and its verdict flipped from run to run; the delete is of "
        f"{r.run.stale_rows:,} rows so that the window during it is long enough "
        "for a tail. Issue 14's goal names a p99: the targets table keeps that goal and names "
        f"the quantile measured. Commit latency during / without: **{r.ratios.label(2, '×')}**; "
        f"ack delay: {r.ack_ratios.label(2, '×')}.",
        "",
        *table(
            ("pair", "s", "commit p50 ms", "commit tail ms", "ack delay tail ms", "max ms"), rows
        ),
        "",
        f"![routine]({PLOTS}/routine.png)",
        "",
    ]


def _overload(results: Results) -> list[str]:
    o = results.overload
    assert o is not None
    capacity = results.capacity
    peak_rss = max((m for _, m in o.rss_samples), default=float("nan"))
    limit = results.broker_before.get("limit_bytes")
    watermark = results.broker_before.get("watermark")
    limit_text = (
        f"{int(limit) / 2**30:.1f} GiB (`vm_memory_high_watermark` {watermark}, RabbitMQ "
        f"{results.broker_before.get('version')}'s default)"
        if isinstance(limit, int)
        else f"unknown ({results.broker_before.get('error', '')})"
    )
    broker_rss = [
        s.get("rss_bytes") for s in (results.broker_before, *o.broker_samples, results.broker_after)
    ]
    broker_peak = max((b for b in broker_rss if isinstance(b, int)), default=0) / 2**20
    alarms = sorted(
        {
            str(a)
            for s in (results.broker_before, *o.broker_samples, results.broker_after)
            for a in _as_list(s.get("alarms"))
        }
    )
    capacity_text = (
        f"{capacity.rate:,.0f} ids/s (saturated, `MAX_CONSUMERS={capacity.run.max_consumers}`, "
        f"{capacity.window:.0f} s)"
        if capacity
        else "–"
    )
    checks = _overload_checks(results, o)
    return [
        "## 6. Overload",
        "",
        f"One consumer's capacity on this machine: {capacity_text}. Offered "
        f"{results.overload_factor:g}× that — **{o.run.rate:,.0f} ids/s** as 200-id callbacks to "
        f"`python -m producer` for {o.window:.0f} s, at the real delays, the consumer at "
        f"`nice -n {o.run.consumer_nice}` (the knob `scripts/run` and compose use, see "
        "operations.md, CPU priority), the tester's 1 s client timeout: a slower answer counts "
        "as missed.",
        "",
        *table(
            ("", "measured"),
            [
                (
                    "callbacks sent / missed (non-2xx or > 1 s) / answered from the spool",
                    f"{o.callbacks_sent:,} / **{o.callbacks_failed}** / {o.callbacks_spooled}",
                ),
                (
                    "callback latency p50 / p99 / max",
                    f"{ms(percentile(o.callback_latency, 0.5))} / "
                    f"{ms(percentile(o.callback_latency, 0.99))} / "
                    f"{ms(max(o.callback_latency, default=float('nan')))} ms",
                ),
                (
                    "served during the offer",
                    f"**{o.rate:,.0f} ids/s** ("
                    + (f"{o.rate / capacity.rate:.0%} of capacity)" if capacity else "?)"),
                ),
                ("largest backlog", f"{o.max_backlog:,} messages"),
                (
                    "consumer RSS, peak sampled / VmHWM",
                    f"**{peak_rss:.0f}** / {o.costs['consumer'].peak_rss_mb:.0f} MB",
                ),
                ("producer's broker state seen on /ready", ", ".join(sorted(o.producer_states))),
                (
                    "broker alarms (rabbitmqctl status, before, every 15 s, after)",
                    ", ".join(alarms) or "none",
                ),
                (
                    "broker memory limit / broker RSS peak sampled",
                    f"{limit_text} / {broker_peak:,.0f} MiB",
                ),
                (
                    "backlog after the offer, drain time, drain rate",
                    f"{o.drain_backlog_ids:,} ids, **{o.drain_seconds:.1f} s**, "
                    f"{o.drain_rate:,.0f} ids/s",
                ),
                (
                    "status API CPU / load generator CPU (of 2 cores, over the window)",
                    f"{o.costs['status API'].cpu_seconds / o.window:.0%} / "
                    f"{o.costs['load generator'].cpu_seconds / o.window:.0%} of one core",
                ),
                (
                    "checks",
                    "; ".join(f"{name}: {'yes' if ok else 'NO'}" for name, ok in checks.items()),
                ),
            ],
        ),
        "",
        f"![overload]({PLOTS}/overload.png)",
        "",
    ]


def _redis(results: Results) -> list[str]:
    lines = ["## 7. Redis as the store (issue 20)", ""]
    if results.store_rounds:
        run = results.store_rounds[0][0].run
        rows = []
        for number, pair in enumerate(results.store_rounds, 1):
            for f in pair:
                consumer = f.costs["consumer"]
                redis_cpu = f.costs.get("redis-server")
                rows.append(
                    (
                        str(number),
                        f.run.store,
                        f"{f.rate:,.0f}",
                        f"{consumer.cpu_ms_per_id:.4f}",
                        num(consumer.peak_rss_mb),
                        f"{1000 * redis_cpu.cpu_ms_per_id:.1f}" if redis_cpu else "–",
                    )
                )
        lines += [
            f"The same `python -m consumer` (`MAX_CONSUMERS={run.max_consumers}`, batches of "
            f"{run.batch_rows} rows / {run.batch_delay}) at {run.rate:,.0f} ids/s offered, "
            f"{run.ids_per_message} ids per message published straight to its queue, the status "
            f"API answering after {run.delay_min}–{run.delay_max} s, with `STORE=postgres` (the "
            "shared PostgreSQL) and with `STORE=redis` (a redis-server the run starts on a free "
            "port, AOF `everysec`; never the machine's one), "
            f"rounds: {len(results.store_rounds)}, the order of the two alternating; each run "
            f"{run.duration:.0f} s after a {run.warmup:.0f} s warm-up. "
            "CPU per id as in section 4 (per id answered: half of them are online and stored). "
            "Ratio "
            f"redis / postgres, per round: **{redis_vs_postgres(results).label(2, '×')}**. "
            "The two runs differ only in the store's write (under 2 µs of the consumer's CPU "
            "per id), less than the runs' own round-to-round spread, so that part is also "
            "measured alone, below: the same batches through each store in one process.",
            "",
            *table(
                (
                    "round",
                    "STORE",
                    "ids/s served",
                    "consumer CPU ms/id",
                    "consumer peak RSS MB",
                    "redis-server CPU µs/id",
                ),
                rows,
            ),
            "",
        ]
    if results.redis_store:
        figures = results.redis_store
        run = figures[0].run

        def spread(attribute: str, digits: int) -> str:
            return Spread.of(getattr(f, attribute) for f in figures).label(digits)

        lines += [
            "Redis server CPU per stored id (`bench/redis_store_bench.py`): a fresh redis-server "
            f"per run (AOF `{'everysec' if run.aof else 'off'}`), {run.writers} writers each "
            f"sending `RedisStore.write` batches of {run.batch} new ids (the consumer's batch) "
            f"back to back for {run.seconds:g} s; ids stored per run: "
            + ", ".join(f"{f.ids:,}" for f in figures)
            + ".",
            "",
            *table(
                ("figure", "median (range, runs)", "from"),
                [
                    (
                        "ids stored per second of redis-server CPU",
                        spread("ids_per_core_s", 0),
                        "ids written / (utime + stime) of `/proc/<pid>/stat`",
                    ),
                    (
                        "redis-server CPU per id, µs (the process)",
                        spread("server_us_per_id", 2),
                        "`/proc/<pid>/stat`",
                    ),
                    (
                        "… of its main thread, µs",
                        spread("main_thread_us_per_id", 2),
                        "`INFO cpu` used_cpu_{sys,user}_main_thread",
                    ),
                    (
                        "inside the script per id, µs (wall)",
                        spread("script_us_per_id", 2),
                        "`INFO commandstats` cmdstat_evalsha usec / ids",
                    ),
                    ("ids stored per second (wall)", spread("ids_per_s", 0), "the writers"),
                    (
                        "benchmark client CPU per id, µs",
                        spread("client_us_per_id", 2),
                        "redis-py, this process",
                    ),
                    *(
                        [
                            (
                                "… the same writes through `PostgresStore`, µs",
                                Spread.of(p.client_us_per_id for p in results.postgres_store).label(
                                    2
                                ),
                                "asyncpg, this process (a scratch database), alternating",
                            )
                        ]
                        if results.postgres_store
                        else []
                    ),
                    (
                        "memory per key, bytes",
                        spread("memory_per_key", 0),
                        "`INFO memory` used_memory after − before, / keys",
                    ),
                    (
                        "one key, bytes",
                        str(figures[0].memory_usage_one),
                        "`MEMORY USAGE object:<id>`",
                    ),
                ],
            ),
            "",
        ]
    return lines


EMULATOR_CAVEAT = (
    "informational, no target: the emulator is not the service (it answers a publish in about a "
    "millisecond, the service in tens; docs/pubsub.md says which settings change for it)"
)


def _consumer_cpu(figures: ConsumerFigures) -> float:
    return figures.costs["consumer"].cpu_ms_per_id


def pubsub_vs_rabbitmq(results: Results) -> Spread:
    """The consumer's CPU per id with BROKER=pubsub over that with BROKER=rabbitmq, per round."""
    return Spread.of(_consumer_cpu(p) / _consumer_cpu(r) for r, p in results.broker_rounds)


def pubsub_summary(results: Results) -> str:
    """One line for the terminal: section 8's figures and what they are not."""
    rate = results.broker_rounds[0][0].run.rate
    rabbit = Spread.of(_consumer_cpu(r) for r, _ in results.broker_rounds)
    pubsub = Spread.of(_consumer_cpu(p) for _, p in results.broker_rounds)
    ratio = pubsub_vs_rabbitmq(results).label(2, "×")
    return (
        f"8. consumer CPU ms/id at {rate:,.0f} ids/s: BROKER=rabbitmq {rabbit.label(4)}, "
        f"BROKER=pubsub (emulator) {pubsub.label(4)}, ratio pubsub/rabbitmq {ratio}"
        f" — {EMULATOR_CAVEAT}"
    )


def _pubsub(results: Results) -> list[str]:
    run = results.broker_rounds[0][0].run
    rows = []
    for number, pair in enumerate(results.broker_rounds, 1):
        for f in pair:
            consumer = f.costs["consumer"]
            emulator = f.costs.get("pubsub emulator")
            rows.append(
                (
                    str(number),
                    f.run.broker,
                    f"{f.rate:,.0f}",
                    f"{f.ids_done:,}",
                    f"{consumer.cpu_ms_per_id:.4f}",
                    num(consumer.peak_rss_mb),
                    f"{emulator.cpu_ms_per_id:.4f}" if emulator else "–",
                )
            )

    def spread(broker: int) -> str:
        return Spread.of(_consumer_cpu(pair[broker]) for pair in results.broker_rounds).label(4)

    return [
        "## 8. Pub/Sub as the broker, against Google's emulator (issue 21)",
        "",
        f"**{EMULATOR_CAVEAT[0].upper()}{EMULATOR_CAVEAT[1:]}.** "
        f"The same `python -m consumer` (`MAX_CONSUMERS={run.max_consumers}`, batches of "
        f"{run.batch_rows} rows / {run.batch_delay}, `STORE=postgres`) at {run.rate:,.0f} ids/s "
        f"offered, {run.ids_per_message} ids per message published straight to its queue "
        "(`BROKER=rabbitmq`, the shared RabbitMQ) or to its topic (`BROKER=pubsub`: Google's "
        "emulator, one the section starts for itself, the message id as the producer's "
        "`message_id` attribute), the status API answering after "
        f"{run.delay_min}–{run.delay_max} s; rounds: {len(results.broker_rounds)}, the order of "
        f"the two alternating; each run {run.duration:g} s after a {run.warmup:g} s warm-up. "
        "CPU per id as in section 4 (the consumer process's utime + stime per id answered). "
        f"Consumer CPU ms/id: `BROKER=rabbitmq` **{spread(0)}**, `BROKER=pubsub` "
        f"**{spread(1)}**; ratio pubsub / rabbitmq, per round: "
        f"**{pubsub_vs_rabbitmq(results).label(2, '×')}**. The emulator's own CPU (a JVM) is "
        "given for scale only: the service's is not ours to pay.",
        "",
        *table(
            (
                "round",
                "BROKER",
                "ids/s served",
                "ids in the window",
                "consumer CPU ms/id",
                "consumer peak RSS MB",
                "emulator CPU ms/id",
            ),
            rows,
        ),
        "",
    ]
