"""The operator's view against the running suite with real traffic: exact metric moves, readiness
through broker and database cuts, a real Prometheus evaluating every dashboard query, and the
live view under tmux and as JSON.

One suite for the whole module (started once: a RabbitMQ node of its own with the management and
Prometheus plugins, proxies in front of it and of PostgreSQL). The tests run in file order; each
measures what it checks as a difference, or after the pipeline settled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import asyncpg
import httpx
import pytest

from tests.support.database import RUN_ID, admin, postgres_env, with_database
from tests.support.metrics import scrape, value
from tests.support.processes import PROJECT_ROOT
from tests.support.prometheus import (
    OBSERVABILITY,
    PrometheusServer,
    ensure_prometheus,
    rewrite_targets,
    shipped_config,
)
from tests.support.proxy import TcpProxy
from tests.support.rabbit_node import PrivateRabbitNode
from tests.support.services import Endpoints
from tests.support.suite import Suite
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

QUEUE = "lastseen_obs"
TESTER_CALLBACKS = 5
TRAFFIC = {
    "TESTER_INTERVAL": "200ms",
    "TESTER_CALLBACKS": str(TESTER_CALLBACKS),
    "TESTER_DELAY_MIN": "5ms",
    "TESTER_DELAY_MAX": "50ms",
    # Ids never repeat across callbacks: one stored row per online answer, so the lag
    # histogram's count must equal the table's row count exactly.
    "TESTER_ID_RANGE": str(10**12),
    "TESTER_MAX_IDS": "20",
    "TESTER_SEED": "13",
    "OBJECT_TTL": "1h",
    "ROUTINE_INTERVAL": "500ms",
    "STARTUP_TIMEOUT": "30s",
}


@dataclass
class Observed:
    suite: Suite
    node: PrivateRabbitNode
    broker_proxy: TcpProxy
    db_proxy: TcpProxy
    database_url: str
    base: Path

    @property
    def producer(self) -> str:
        return self.suite.producer_url

    @property
    def tester(self) -> str:
        return self.suite.tester_url

    @property
    def consumers(self) -> list[str]:
        return [
            f"http://127.0.0.1:{self.suite.env[name]}"
            for name in ("CONSUMER_1_METRICS_PORT", "CONSUMER_2_METRICS_PORT")
        ]

    @property
    def routine(self) -> str:
        return f"http://127.0.0.1:{self.suite.env['ROUTINE_METRICS_PORT']}"

    def fetch(self, sql: str) -> Any:
        async def run() -> Any:
            connection = await asyncpg.connect(self.database_url)
            try:
                return await connection.fetchrow(sql)
            finally:
                await connection.close()

        return asyncio.run(run())

    def queue_count(self, name: str) -> int:
        async def run() -> int:
            connection = await aio_pika.connect(self.node.amqp_uri)
            try:
                channel = await connection.channel()
                queue = await channel.declare_queue(name, passive=True)
                return int(queue.declaration_result.message_count or 0)
            finally:
                await connection.close()

        return asyncio.run(run())

    def settled(self) -> bool:
        """Every durable id taken by a consumer, every message acked, nothing held."""
        consumers = [scrape(url) for url in self.consumers]
        ids_in = value(scrape(self.producer), "lastseen_producer_ids_total")
        return (
            sum(value(c, "lastseen_consumer_ids_total") for c in consumers) == ids_in
            and sum(value(c, "lastseen_consumer_messages_total") for c in consumers)
            == sum(value(c, "lastseen_consumer_acked_total") for c in consumers)
            + sum(value(c, "lastseen_consumer_dead_total") for c in consumers)
            and not any(value(c, "lastseen_consumer_oldest_unacked_age_seconds") for c in consumers)
        )

    def wait_settled(self) -> None:
        wait_until(self.settled, timeout=20, interval=0.2, what="pipeline settled")


@pytest.fixture(scope="module")
def observed(endpoints: Endpoints) -> Iterator[Observed]:
    why_not = PrivateRabbitNode.available()
    if why_not:
        pytest.skip(why_not)
    # Not pytest's tmp_path: its parents are 0700, and the node runs as user rabbitmq.
    base = Path(tempfile.mkdtemp(prefix="lastseen-obs-"))
    base.chmod(0o755)
    database = f"lastseen_obs_{RUN_ID}_{uuid.uuid4().hex[:4]}"
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, base, ignore_errors=True)
        node = PrivateRabbitNode(base / "rabbit", ("rabbitmq_management", "rabbitmq_prometheus"))
        cleanup.callback(node.stop)
        node.start()
        admin(endpoints.database_url, f'CREATE DATABASE "{database}"')
        cleanup.callback(
            admin, endpoints.database_url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'
        )
        database_url = with_database(endpoints.database_url, database)
        broker_proxy = TcpProxy("127.0.0.1", node.port).start()
        cleanup.callback(broker_proxy.stop)
        db_proxy = TcpProxy(*endpoints.database_host_port).start()
        cleanup.callback(db_proxy.stop)
        env = {
            "AMQP_URI": f"amqp://guest:guest@127.0.0.1:{broker_proxy.port}/",
            "QUEUE_NAME": QUEUE,
            **postgres_env(database_url),
            "POSTGRES_HOST": "127.0.0.1",
            "POSTGRES_PORT": str(db_proxy.port),
            "LOG_LEVEL": "info",
            **TRAFFIC,
        }
        suite = Suite.create(env, base / "suite")
        cleanup.callback(suite.stop_all)
        suite.start_all()
        running = Observed(suite, node, broker_proxy, db_proxy, database_url, base)
        suite.wait_for_callbacks(TESTER_CALLBACKS, timeout=30)
        running.wait_settled()
        yield running
        for name, process in suite.processes.items():
            assert "Traceback" not in process.output(), name


def post_callback(url: str, ids: list[int]) -> dict[str, Any]:
    answer = httpx.post(f"{url}/callback", json={"object_ids": ids}, timeout=5)
    assert answer.status_code == 202, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_seven_callbacks_move_every_counter_by_the_exact_amount(observed: Observed) -> None:
    producer_before = scrape(observed.producer)
    consumers_before = [scrape(url) for url in observed.consumers]

    def consumed(name: str, samples: list[Any] | None = None, **labels: str) -> float:
        return sum(value(s, name, **labels) for s in (samples or consumers_before))

    base = 10**13
    for n in range(7):
        first = base + 100 * n
        # four unique ids (two even: online) and a repeat, which the producer drops
        body = post_callback(observed.producer, [first, first + 1, first + 2, first + 3, first])
        assert body["accepted"] == 4
    observed.wait_settled()
    producer = scrape(observed.producer)
    consumers = [scrape(url) for url in observed.consumers]

    def moved(name: str, **labels: str) -> float:
        return consumed(name, consumers, **labels) - consumed(name, **labels)

    def produced(name: str, **labels: str) -> float:
        return value(producer, name, **labels) - value(producer_before, name, **labels)

    durable = produced("lastseen_producer_callbacks_total", outcome="confirmed") + produced(
        "lastseen_producer_callbacks_total", outcome="spooled"
    )
    assert durable == 7
    assert produced("lastseen_producer_callbacks_total", outcome="rejected") == 0
    assert produced("lastseen_producer_ids_total") == 28
    assert produced("lastseen_producer_callback_seconds_count") == 7
    assert moved("lastseen_consumer_messages_total") == 7
    assert moved("lastseen_consumer_ids_total") == 28
    assert moved("lastseen_consumer_acked_total") == 7
    assert moved("lastseen_consumer_status_seconds_count", outcome="online") == 14
    assert moved("lastseen_consumer_status_seconds_count", outcome="offline") == 14
    assert moved("lastseen_consumer_status_seconds_count", outcome="failed") == 0
    assert moved("lastseen_consumer_lag_seconds_count") == 14
    assert moved("lastseen_consumer_flush_rows_sum") == 14
    assert moved("lastseen_consumer_dead_total") == moved("lastseen_consumer_retried_total") == 0
    lag_seconds = moved("lastseen_consumer_lag_seconds_sum")
    assert 0 < lag_seconds < 14 * 10, "14 rows, each committed well within 10 s"

    ours = observed.fetch(f"SELECT count(*) AS n FROM object WHERE id >= {base}")["n"]
    assert ours == 14
    rows = observed.fetch("SELECT count(*) AS n FROM object")["n"]
    assert consumed("lastseen_consumer_lag_seconds_count", consumers) == rows > ours

    routine = scrape(observed.routine)
    assert value(routine, "lastseen_routine_rows_behind") == 0
    assert value(routine, "lastseen_routine_object_ttl_seconds") == 3600
    assert value(routine, "lastseen_routine_ticks_total", outcome="ran") > 0
    for url in [observed.producer, *observed.consumers, observed.routine, observed.tester]:
        assert value(scrape(url), "process_resident_memory_bytes") > 0, url


def test_the_tester_exports_its_ledger(observed: Observed) -> None:
    records = observed.suite.ledger()
    assert len(records) == TESTER_CALLBACKS
    tester = scrape(observed.tester)
    statuses = {str(r["status"]) if r["status"] is not None else "none" for r in records}
    for status in statuses:
        sent = sum(1 for r in records if str(r["status"] or "none") == status)
        assert value(tester, "lastseen_tester_callbacks_total", status=status) == sent
    assert value(tester, "lastseen_tester_callbacks_total") == TESTER_CALLBACKS
    assert value(tester, "lastseen_tester_ids_total") == sum(len(r["object_ids"]) for r in records)
    assert value(tester, "lastseen_tester_callback_seconds_count") == TESTER_CALLBACKS
    latency = sum(r["latency_ms"] for r in records) / 1000
    assert value(tester, "lastseen_tester_callback_seconds_sum") == pytest.approx(latency, abs=0.01)


def _host(url: str) -> str:
    return url.split("://", 1)[1].rstrip("/")


def _without_targets(config: dict[str, Any]) -> dict[str, Any]:
    stripped = json.loads(json.dumps(config))
    stripped.pop("rule_files")
    for job in stripped["scrape_configs"]:
        job.pop("static_configs", None)
        job.pop("dns_sd_configs", None)
    return stripped


def test_a_real_prometheus_scrapes_the_suite_and_every_dashboard_query_has_data(
    observed: Observed,
) -> None:
    why_not = ensure_prometheus()
    if why_not:
        pytest.fail(why_not)
    targets = {
        "producer": [_host(observed.producer)],
        "consumer": [_host(url) for url in observed.consumers],
        "routine": [_host(observed.routine)],
        "tester": [_host(observed.tester)],
        "rabbitmq": [f"127.0.0.1:{observed.node.prometheus_port}"],
    }
    shipped = shipped_config()
    config = rewrite_targets(shipped, targets)
    assert _without_targets(config) == _without_targets(shipped), "only targets rewritten"
    prometheus = PrometheusServer(config, observed.base / "prometheus").start()
    try:

        def all_up() -> list[dict[str, Any]] | None:
            active: list[dict[str, Any]] = prometheus.api("targets")["activeTargets"]
            healthy = len(active) == 6 and all(t["health"] == "up" for t in active)
            return active if healthy else None

        active = wait_until(all_up, timeout=30, interval=0.5, what="all six targets up")
        assert {t["labels"]["job"] for t in active} == set(targets)
        # traffic while Prometheus watches, so rates and quantiles have something to show
        for n in range(3):
            post_callback(observed.producer, [2 * 10**13 + 10 * n, 2 * 10**13 + 10 * n + 1])
        dashboard = json.loads(
            (OBSERVABILITY / "grafana" / "dashboards" / "lastseen.json").read_text()
        )
        exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]

        def missing() -> list[str]:
            return [expr for expr in exprs if not prometheus.query(expr)]

        wait_until(lambda: not missing(), timeout=40, interval=1, what="every query has data")
        assert missing() == []
        ids_in = prometheus.query("sum(rate(lastseen_producer_ids_total[1m]))")
        assert float(ids_in[0]["value"][1]) > 0
        rules = prometheus.api("rules")["groups"]
        loaded = {rule["name"] for group in rules for rule in group["rules"]}
        assert "LastseenLagAboveTTL" in loaded and len(loaded) == 7
    finally:
        prometheus.stop()


def liveview_env_file(observed: Observed, path: Path, **overrides: str) -> Path:
    parts = postgres_env(observed.database_url)
    env = {
        "AMQP_URI": observed.node.amqp_uri,
        "QUEUE_NAME": QUEUE,
        **parts,
        "CALLBACK_ENDPOINT": observed.producer,
        "CONSUMER_1_METRICS_PORT": observed.suite.env["CONSUMER_1_METRICS_PORT"],
        "CONSUMER_2_METRICS_PORT": observed.suite.env["CONSUMER_2_METRICS_PORT"],
        **overrides,
    }
    path.write_text("".join(f"{key}={val}\n" for key, val in env.items()))
    return path


def liveview_command(observed: Observed, env_file: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "liveview",
        "--env-file",
        str(env_file),
        "--rabbitmq",
        f"http://127.0.0.1:{observed.node.management_port}",
        *args,
    ]


def dead_letter_three(observed: Observed) -> None:
    """Three malformed messages: the consumers dead-letter them, so the dead queue holds 3."""
    before = observed.queue_count(f"{QUEUE}.dead")

    async def publish() -> None:
        connection = await aio_pika.connect(observed.node.amqp_uri)
        try:
            channel = await connection.channel()
            for n in range(3):
                await channel.default_exchange.publish(
                    aio_pika.Message(f"not json {n}".encode()), QUEUE
                )
        finally:
            await connection.close()

    asyncio.run(publish())
    wait_until(
        lambda: observed.queue_count(f"{QUEUE}.dead") == before + 3,
        timeout=15,
        what="three dead letters",
    )


def truth(observed: Observed) -> dict[str, Any]:
    row = observed.fetch("SELECT count(*) AS n, min(last_seen) AS oldest FROM object")
    ready = httpx.get(f"{observed.producer}/ready", timeout=5).json()
    return {
        "queue_work": observed.queue_count(QUEUE),
        "queue_dead": observed.queue_count(f"{QUEUE}.dead"),
        "rows": row["n"],
        "oldest": row["oldest"],
        "spool_depth": ready["spool_depth"],
    }


def screen_fields(screen: str) -> dict[str, str]:
    fields = {}
    for line in screen.splitlines():
        label, _, rest = line.partition("  ")
        if rest.strip():
            fields[label.strip()] = rest.strip()
    return fields


def test_the_live_view_under_tmux_shows_the_queue_and_the_table(
    observed: Observed, tmp_path: Path
) -> None:
    if not shutil.which("tmux"):
        pytest.skip("tmux is not installed")
    observed.wait_settled()
    dead_letter_three(observed)
    env_file = liveview_env_file(observed, tmp_path / "liveview.env")
    socket = f"lastseen-obs-{uuid.uuid4().hex[:6]}"
    tmux = ["tmux", "-L", socket]
    command = " ".join(liveview_command(observed, env_file))
    subprocess.run(
        [*tmux, "new-session", "-d", "-s", "liveview", "-x", "160", "-y", "40", "-c",
         str(PROJECT_ROOT), f"env PYTHONPATH={PROJECT_ROOT} {command}"],
        check=True, timeout=10,
    )  # fmt: skip
    try:
        expected = truth(observed)

        def shown() -> dict[str, str] | None:
            screen = subprocess.run(
                [*tmux, "capture-pane", "-p", "-t", "liveview"],
                capture_output=True, text=True, check=True, timeout=10,
            ).stdout  # fmt: skip
            fields = screen_fields(screen)
            wanted = {
                "queue: work": str(expected["queue_work"]),
                "queue: retry tiers": "0",
                "queue: dead": str(expected["queue_dead"]),
                "objects stored": str(expected["rows"]),
                "oldest last_seen": expected["oldest"].isoformat(),
                "spool depth": str(expected["spool_depth"]),
                "dead letters": str(expected["queue_dead"]),
            }
            return fields if all(fields.get(k) == v for k, v in wanted.items()) else None

        fields = wait_until(shown, timeout=20, interval=0.5, what="the screen matches")
        assert fields["queue: dead"] == "3"
        assert fields["source rabbitmq"] == "ok" and fields["source postgresql"] == "ok"
        assert fields["source producer"] == "ok" and fields["source consumers"] == "ok"
        assert fields["ids/s in (producer)"].endswith("/s")
    finally:
        subprocess.run([*tmux, "kill-server"], check=False, timeout=10)


def run_liveview(observed: Observed, env_file: Path, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        liveview_command(observed, env_file, "--once", "--json", *args),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=PROJECT_ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    snapshot: dict[str, Any] = json.loads(done.stdout)
    return snapshot


def test_the_live_view_json_field_by_field(observed: Observed, tmp_path: Path) -> None:
    observed.wait_settled()
    expected = truth(observed)
    snapshot = run_liveview(observed, liveview_env_file(observed, tmp_path / "ok.env"))
    assert snapshot["sources"] == {
        "rabbitmq": "ok",
        "producer": "ok",
        "consumers": "ok",
        "postgresql": "ok",
    }
    assert snapshot["queue_work"] == expected["queue_work"] == 0
    assert snapshot["queue_retry"] == 0
    assert snapshot["queue_dead"] == snapshot["dead_letters"] == expected["queue_dead"]
    assert snapshot["rows"] == expected["rows"]
    assert snapshot["oldest_last_seen"] == expected["oldest"].isoformat()
    age = (datetime.now(expected["oldest"].tzinfo) - expected["oldest"]).total_seconds()
    assert snapshot["oldest_age_s"] == pytest.approx(age, abs=5)
    assert snapshot["spool_depth"] == expected["spool_depth"] == 0
    # settled and the tester done: nothing moves during the one-second window
    assert snapshot["ids_in_per_s"] == snapshot["ids_out_per_s"] == snapshot["stored_per_s"] == 0
    assert snapshot["lag_p99_s"] is None
    assert 0.9 <= snapshot["window_s"] <= 3
    datetime.fromisoformat(snapshot["time"])


def test_the_live_view_names_the_source_that_refused_or_did_not_answer(
    observed: Observed, tmp_path: Path
) -> None:
    bad_broker = liveview_env_file(
        observed,
        tmp_path / "bad-broker.env",
        AMQP_URI=f"amqp://guest:wrong@127.0.0.1:{observed.node.port}/",
    )
    snapshot = run_liveview(observed, bad_broker, "--producer", "http://127.0.0.1:1")
    assert snapshot["sources"]["rabbitmq"].startswith("refused: rabbitmq management API")
    assert snapshot["queue_work"] == snapshot["dead_letters"] == "refused"
    assert snapshot["sources"]["producer"].startswith("unreachable: producer")
    assert snapshot["ids_in_per_s"] == snapshot["spool_depth"] == "unreachable"
    assert isinstance(snapshot["rows"], int), "the other sources still read"
    assert snapshot["sources"]["consumers"] == "ok"

    parts = urlsplit(observed.database_url)
    stranger = urlunsplit(parts._replace(netloc=f"nobody:x@{parts.hostname}:{parts.port or 5432}"))
    ok_env = liveview_env_file(observed, tmp_path / "ok.env")
    snapshot = run_liveview(observed, ok_env, "--dsn", stranger)
    assert snapshot["sources"]["postgresql"].startswith("refused: postgresql")
    assert snapshot["rows"] == "refused"
    assert snapshot["queue_dead"] == 3


def ready(url: str) -> tuple[int, dict[str, Any]]:
    answer = httpx.get(f"{url}/ready", timeout=5)
    return answer.status_code, answer.json()


def test_ready_turns_false_while_the_broker_or_database_is_cut_and_true_after(
    observed: Observed,
) -> None:
    consumer, routine = observed.consumers[0], observed.routine
    assert ready(consumer) == (200, {"ready": True, "broker": True, "database": True})
    assert ready(routine) == (200, {"ready": True, "database": True})

    observed.broker_proxy.cut()
    try:
        wait_until(lambda: ready(consumer)[0] == 503, timeout=10, what="consumer not ready")
        assert ready(consumer)[1] == {"ready": False, "broker": False, "database": True}
        assert ready(routine)[0] == 200, "the routine does not need the broker"
        assert httpx.get(f"{consumer}/health", timeout=5).status_code == 200
    finally:
        observed.broker_proxy.restore()
    wait_until(lambda: ready(consumer)[0] == 200, timeout=30, what="consumer ready again")

    # Nothing to write meanwhile: the idle consumer must notice the cut on its own.
    observed.db_proxy.cut()
    try:
        wait_until(lambda: ready(consumer)[0] == 503, timeout=10, what="consumer sees the cut")
        assert ready(consumer)[1]["database"] is False
        wait_until(lambda: ready(routine)[0] == 503, timeout=10, what="routine sees the cut")
        assert ready(routine)[1] == {"ready": False, "database": False}
        assert httpx.get(f"{routine}/health", timeout=5).status_code == 200
    finally:
        observed.db_proxy.restore()
    wait_until(lambda: ready(consumer)[0] == 200, timeout=20, what="consumer ready again")
    wait_until(lambda: ready(routine)[0] == 200, timeout=20, what="routine ready again")
