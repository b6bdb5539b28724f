"""The capacity plan: the figures ``bench.capacity`` measured, multiplied out to 10 k, 100 k
and 1 M ids/s under stated assumptions, rendered as docs/SCALING.md."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bench.measure import machine
from common.durations import format_duration
from routine.settings import RoutineSettings

TIERS = (10_000, 100_000, 1_000_000)
IDS_PER_MESSAGE = 200  # the producer's default, and the ids of one planned callback
ONLINE_FRACTION = 0.5  # the tester: even ids are online; only those are written
MEAN_DELAY_S = 2.3  # the tester's uniform 0.3-4.3 s
OBJECT_TTL_S = 30.0
ROUTINE_INTERVAL_S = 3.0
REPORT_INTERVAL_S = 5.0  # an object reports about once per tester interval (refresh regime)
UTILISATION = 0.7  # plan every part to run at 70 % of what was measured
CONSUMER_MAX_CONSUMERS = 8000  # deploy/kubernetes/base/config.yaml
POD_CPU_LIMIT = 1.0  # producer and consumer pods: limits.cpu in deploy/kubernetes
# Not measured here (no such machine): where one PostgreSQL primary stops scaling for this
# write pattern. Stated as assumptions in the output, used to place the bottleneck.
PRIMARY_CORE_CEILING = 16.0
PRIMARY_WAL_CEILING_MB_S = 100.0
QUORUM_REPLICAS = 3


@dataclass
class Measured:
    consumer: dict[str, float] = field(default_factory=dict)
    postgres: dict[str, float] = field(default_factory=dict)
    broker: dict[str, float] = field(default_factory=dict)
    producer: dict[str, float] = field(default_factory=dict)


@dataclass
class Tier:
    ids_per_s: int
    consumer_pods: int
    consumer_cores: float
    producer_pods: int
    producer_cores: float
    broker_nodes: int
    broker_cores: float
    messages_per_s: float
    upserts_per_s: float
    primary_cores: float
    primary_cores_churn: float
    primary_cores_worst: float
    wal_mb_s: float
    rows_refresh: float
    rows_churn: float
    db_gb_refresh: float
    db_gb_churn: float
    standby_cores: float
    routine_load: float  # churn deletes needed / one routine's measured delete rate
    total_cores: float
    partitions: int


def plan(measured: Measured) -> list[Tier]:
    c, pg, b, p = measured.consumer, measured.postgres, measured.broker, measured.producer
    # A consumer pod serves what the measurement served at MAX_CONSUMERS in flight, bounded by
    # Little's law for the pods' configured in-flight count.
    per_pod = min(c["ids_per_s"], CONSUMER_MAX_CONSUMERS / MEAN_DELAY_S) * UTILISATION
    tiers = []
    for ids in TIERS:
        consumer_cores = ids * c["cpu_ms_per_id"] / 1000
        consumer_pods = max(2, math.ceil(ids / per_pod))
        callbacks = ids / IDS_PER_MESSAGE
        producer_cores = callbacks / p["callbacks_per_core"]
        producer_pods = max(2, math.ceil(producer_cores / (POD_CPU_LIMIT * UTILISATION)))
        messages = ids / IDS_PER_MESSAGE
        # Measured on one node; in a three-node cluster every node keeps a replica of each
        # quorum-queue message, so count the full cost three times (conservative).
        broker_cores = QUORUM_REPLICAS * messages / b["messages_per_core"] / UTILISATION
        upserts = ids * ONLINE_FRACTION
        primary = upserts / pg["refresh_rows_per_core"] / UTILISATION
        primary_churn = upserts / pg["churn_rows_per_core"] / UTILISATION
        wal = upserts * max(pg["churn_wal_bytes_per_row"], pg["refresh_wal_bytes_per_row"]) / 1e6
        rows_refresh = upserts * REPORT_INTERVAL_S
        rows_churn = upserts * (OBJECT_TTL_S + ROUTINE_INTERVAL_S)
        worst = max(primary, primary_churn)
        partitions = max(
            1,
            math.ceil(worst / PRIMARY_CORE_CEILING),
            math.ceil(wal / PRIMARY_WAL_CEILING_MB_S),
        )
        # Standbys replay the WAL; take a standby at half the primary's CPU (not measured here).
        standby = 2 * 0.5 * worst
        tiers.append(
            Tier(
                ids_per_s=ids,
                consumer_pods=consumer_pods,
                consumer_cores=consumer_cores,
                producer_pods=producer_pods,
                producer_cores=producer_cores,
                broker_nodes=QUORUM_REPLICAS,
                broker_cores=broker_cores,
                messages_per_s=messages,
                upserts_per_s=upserts,
                primary_cores=primary,
                primary_cores_churn=primary_churn,
                primary_cores_worst=worst,
                wal_mb_s=wal,
                rows_refresh=rows_refresh,
                rows_churn=rows_churn,
                db_gb_refresh=rows_refresh * pg["bytes_per_row"] / 1e9,
                db_gb_churn=rows_churn * pg["bytes_per_row"] / 1e9,
                standby_cores=standby,
                routine_load=upserts / pg["routine_delete_rows_per_s"],
                total_cores=(consumer_cores + producer_cores) / UTILISATION
                + broker_cores
                + worst
                + standby,
                partitions=partitions,
            )
        )
    return tiers


def _routine_rate(pg: dict[str, float]) -> str:
    rate = pg["routine_delete_rows_per_s"]
    if pg["routine_kept_up"]:
        return f"**kept up**: deletes at least {rate:,.0f} rows/s (as fast as they were inserted)"
    defaults = RoutineSettings.model_fields  # the capacity run starts the routine with these
    size = defaults["routine_batch_size"].default
    pause = format_duration(defaults["routine_batch_pause"].default)
    return (
        f"**{rate:,.0f} rows deleted per second** by one routine "
        f"(ROUTINE_BATCH_SIZE={size}, ROUTINE_BATCH_PAUSE={pause})"
    )


def _n(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _ids(ids: int) -> str:
    return f"{ids // 1000:,} k" if ids < 1_000_000 else f"{ids // 1_000_000} M"


def bottleneck(tier: Tier) -> str:
    share = max(
        tier.primary_cores_worst / PRIMARY_CORE_CEILING, tier.wal_mb_s / PRIMARY_WAL_CEILING_MB_S
    )
    routine = ""
    if tier.routine_load > UTILISATION:
        routine = (
            f"; in the churn case the single routine would have to delete "
            f"{tier.upserts_per_s:,.0f} rows/s, {tier.routine_load:.0%} of what one routine "
            "measured here: with `object` partitioned by id, run one routine per partition (an "
            "advisory lock per partition), or partition by time and drop whole partitions"
        )
    if tier.partitions > 1:
        return (
            f"one PostgreSQL primary: {_n(tier.primary_cores_worst)} cores of upserts and "
            f"deletes and {_n(tier.wal_mb_s)} MB/s of WAL, {share:.0%} of the single-primary "
            f"ceiling assumed above → partition `object` by id over {tier.partitions} "
            "primaries (hash of `id` in the consumer choosing the database, or a distributed "
            "PostgreSQL such as Citus with `object` distributed by `id`); consumers, producers "
            "and the broker still only add replicas" + routine
        )
    busy = {
        "the consumers": tier.consumer_cores,
        "the PostgreSQL primary": tier.primary_cores_worst,
        "the broker": tier.broker_cores,
        "the producers": tier.producer_cores,
    }
    largest = max(busy, key=lambda name: busy[name])
    text = (
        f"most cores go to {largest} ({_n(busy[largest])}); the consumer pod count is set by "
        f"status lookups in flight ({tier.consumer_pods} pods x {CONSUMER_MAX_CONSUMERS:,}), "
        f"not by CPU; one primary carries every write at {share:.0%} of its assumed ceiling"
    )
    if share > 0.5:
        text += ", so the next step up needs the database partitioned by id"
    return text + routine


def render(measured: Measured, profile_name: str, command: str) -> str:
    c, pg, b, p = measured.consumer, measured.postgres, measured.broker, measured.producer
    tiers = plan(measured)
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Capacity plan",
        "",
        f"Generated by `{command}` on {now}, profile **{profile_name}**.",
        "",
        f"Machine: `{machine()}`. Broker (RabbitMQ, the local node), database (PostgreSQL, the "
        "local server), the services and the load generators all share it, and other work ran "
        "beside them: every cost below is an upper bound for this hardware.",
        "",
        "## Measured here",
        "",
        "| part | figure | how |",
        "|---|---|---|",
        f"| consumer | **{c['cpu_ms_per_id']:.3f} ms CPU per id** → "
        f"{1000 / c['cpu_ms_per_id']:,.0f} ids/s per core | one `python -m consumer`, "
        f"MAX_CONSUMERS={c['max_consumers']:.0f}, {c['offered_ids_per_s']:,.0f} ids/s offered, "
        f"{IDS_PER_MESSAGE} ids per message, status delays "
        f"{'0.3-4.3 s (the real ones)' if profile_name == 'full' else 'shortened (smoke)'}, "
        f"{c['window_s']:.0f} s window |",
        f"| consumer | {c['ids_per_s']:,.0f} ids/s served, peak RSS {c['peak_rss_mb']:.0f} MB, "
        f"peak {c['peak_in_flight']:,.0f} in flight, backlog max "
        f"{c['max_backlog_messages']:.0f} messages | same run |",
        f"| PostgreSQL, refresh | **{pg['refresh_rows_per_core']:,.0f} rows per core-second** "
        f"({pg['refresh_rows_per_core_backends']:,.0f} counting the backends only); "
        f"{pg['refresh_rows_per_s']:,.0f} rows/s wall | the consumer's `BatchWriter`, 500-row "
        "`unnest` upserts, every id already stored; CPU of the backends plus WAL writer, "
        "checkpointer, background writer and autovacuum |",
        f"| PostgreSQL, churn | **{pg['churn_rows_per_core']:,.0f} rows per core-second**; "
        f"{pg['churn_rows_per_s']:,.0f} rows/s inserted | every id new, the real "
        f"`python -m routine` deleting rows {pg['churn_ttl_s']:.1f} s old; the window runs "
        "until it has deleted them all, so the CPU is one insert plus one delete per row |",
        f"| routine | {_routine_rate(pg)} | one routine holds the advisory lock and deletes "
        f"alone; {pg['routine_backlog_rows']:,.0f} rows were still stale one TTL after the "
        "writers stopped, and the time to delete them gives its rate |",
        f"| PostgreSQL, WAL | {pg['refresh_wal_bytes_per_row']:.0f} bytes per refreshed row, "
        f"{pg['churn_wal_bytes_per_row']:.0f} per inserted row | `EXPLAIN (ANALYZE, WAL)` of one "
        "500-row upsert |",
        f"| PostgreSQL, size | {pg['bytes_per_row']:.0f} bytes per row (table + indexes, with "
        "the dead space of constant updates) | `pg_total_relation_size` / rows |",
        f"| RabbitMQ | **{b['messages_per_core']:,.0f} messages per core-second** "
        f"({b['messages_per_s']:,.0f}/s wall) | persistent {b['message_bytes']:.0f}-byte "
        f"messages ({IDS_PER_MESSAGE} ids), publisher confirms, quorum work queue, delivered and "
        f"acked; broker CPU less its idle {b['idle_cores']:.2f} cores |",
        f"| producer | **{p['callbacks_per_core']:,.0f} callbacks per core-second** "
        f"({p['callbacks_per_s']:,.0f}/s wall), peak RSS {p['peak_rss_mb']:.0f} MB, "
        f"{100 * p['spooled_fraction']:.0f} % spooled | one `python -m producer`, "
        f"{IDS_PER_MESSAGE} distinct ids per callback, every callback answered 202 |",
        f"| routine | peak RSS {pg['routine_peak_rss_mb']:.0f} MB | the churn run |",
        "",
        "## Assumptions (not measured)",
        "",
        f"- A callback carries {IDS_PER_MESSAGE} distinct ids, one work message "
        f"(IDS_PER_MESSAGE={IDS_PER_MESSAGE}); {ONLINE_FRACTION:.0%} of ids are online and "
        "written (the tester: even ids); retries are rare.",
        f"- Status API answers in {MEAN_DELAY_S} s on average (0.3-4.3 s); a consumer pod holds "
        f"MAX_CONSUMERS={CONSUMER_MAX_CONSUMERS:,} lookups in flight, so it serves at most "
        f"{CONSUMER_MAX_CONSUMERS / MEAN_DELAY_S:,.0f} ids/s (Little's law) and is planned at "
        f"{UTILISATION:.0%} of what one served here.",
        f"- Every part planned at {UTILISATION:.0%} of its measured capacity; pods of the "
        f"producer and consumer count at their limit of {POD_CPU_LIMIT:.0f} core.",
        f"- RabbitMQ: {QUORUM_REPLICAS} nodes, each keeping a replica of every message: the "
        "one-node cost counted three times.",
        "- Table size: *refresh* = each online object reports every "
        f"{REPORT_INTERVAL_S:.0f} s, so the table holds 5 s of online ids; *churn* (the worst "
        f"case) = no id repeats, so it holds OBJECT_TTL + ROUTINE_INTERVAL = "
        f"{OBJECT_TTL_S + ROUTINE_INTERVAL_S:.0f} s of them. Database cores: the dearer of "
        "the two regimes.",
        f"- One PostgreSQL primary is taken to stop scaling this write pattern past "
        f"{PRIMARY_CORE_CEILING:.0f} cores or {PRIMARY_WAL_CEILING_MB_S:.0f} MB/s of WAL "
        "(WAL insertion, synchronous replication of one WAL stream, single-threaded replay on "
        "the standbys). Standbys are taken at half the primary's CPU each.",
        "",
        "## The plan",
        "",
        "| | " + " | ".join(f"{_ids(t.ids_per_s)} ids/s" for t in tiers) + " |",
        "|---|" + "---|" * len(tiers),
        "| consumer pods (KEDA) | "
        + " | ".join(f"{t.consumer_pods} ({_n(t.consumer_cores)} cores busy)" for t in tiers)
        + " |",
        "| producer pods | "
        + " | ".join(f"{t.producer_pods} ({_n(t.producer_cores)} cores busy)" for t in tiers)
        + " |",
        "| work messages/s | " + " | ".join(f"{t.messages_per_s:,.0f}" for t in tiers) + " |",
        "| RabbitMQ | "
        + " | ".join(f"{t.broker_nodes} nodes, {_n(t.broker_cores)} cores in all" for t in tiers)
        + " |",
        "| upserts/s | " + " | ".join(f"{t.upserts_per_s:,.0f}" for t in tiers) + " |",
        "| PostgreSQL primary cores (refresh / churn) | "
        + " | ".join(f"{_n(t.primary_cores)} / {_n(t.primary_cores_churn)}" for t in tiers)
        + " |",
        "| WAL | " + " | ".join(f"{_n(t.wal_mb_s)} MB/s" for t in tiers) + " |",
        "| routine: churn deletes / one routine's rate | "
        + " | ".join(f"{t.routine_load:.0%}" for t in tiers)
        + " |",
        "| PostgreSQL primaries (by id) | " + " | ".join(str(t.partitions) for t in tiers) + " |",
        "| rows held (refresh / churn) | "
        + " | ".join(f"{t.rows_refresh:,.0f} / {t.rows_churn:,.0f}" for t in tiers)
        + " |",
        "| database size (refresh / churn) | "
        + " | ".join(f"{_n(t.db_gb_refresh)} / {_n(t.db_gb_churn)} GB" for t in tiers)
        + " |",
        "| total cores (busy cores / 70 %: pods, broker, primary + 2 standbys) | "
        + " | ".join(f"**{t.total_cores:,.0f}**" for t in tiers)
        + " |",
        "",
        "## Where the bottleneck is",
        "",
    ]
    for tier in tiers:
        lines.append(f"- **{_ids(tier.ids_per_s)} ids/s**: {bottleneck(tier)}.")
    lines += [
        "",
        "Beyond the table: the status API itself must hold ids/s x 2.3 s requests in flight "
        f"({TIERS[-1] * MEAN_DELAY_S:,.0f} at 1 M ids/s), spread over the consumer pods' "
        "connections; one quorum work queue is one Raft leader process, so past a few tens of "
        "thousands of messages/s (smaller messages, or far more ids/s) the work queue would be "
        "split into several queues, each with its own consumers and KEDA trigger.",
        "",
        "## What to set",
        "",
        "- `deploy/kubernetes/base/consumer.yaml`: `maxReplicaCount` = the consumer pods of "
        "your tier (the manifest ships the 100 k ids/s figure, rounded up).",
        "- `deploy/kubernetes/base/postgres.yaml`: primary cores from the table, "
        "`max_connections` >= consumer pods x POSTGRES_POOL_SIZE + routines (or a CloudNativePG "
        "`Pooler` in front); past one primary, partition by id as above.",
        "- Requests and limits of the pods come from the per-pod figures measured above "
        "(consumer and producer CPU per unit of work and peak RSS).",
        "",
        "Measured vs extrapolated: the figures in *Measured here* come from this run; every "
        "number in *The plan* is those figures multiplied out under the stated assumptions. "
        "Nothing here ran on a cluster or on more than this machine.",
        "",
    ]
    return "\n".join(lines)


# What follows this line in docs/SCALING.md is written by hand (the Redis Cluster plan, from
# bench/redis_store_bench.py and python -m bench): a new run of python -m bench.capacity keeps it.
KEPT = "<!-- written by hand below: python -m bench.capacity keeps what follows -->"


def keep_hand_written(generated: str, previous: str) -> str:
    """``generated`` followed by what ``previous`` holds after :data:`KEPT`, if anything."""
    if KEPT not in previous:
        return generated
    return generated.rstrip("\n") + "\n\n" + KEPT + previous.split(KEPT, 1)[1]
