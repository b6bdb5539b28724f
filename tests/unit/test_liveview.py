"""The live view's pure parts: quantiles, rates over a window, cells of sources that failed, the
screen, and its configuration errors."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime

import pytest

from liveview.__main__ import ConfigurationError, build_config, main, parser
from liveview.snapshot import Reading, quantile, render_text, summarize
from liveview.sources import Broker, QueueDepths, SourceDown, Table, parse_metrics

pytestmark = pytest.mark.unit

PRODUCER = """# TYPE lastseen_producer_ids counter
lastseen_producer_ids_total {ids}
# TYPE lastseen_producer_spool_depth gauge
lastseen_producer_spool_depth 4
"""
CONSUMER = """# TYPE lastseen_consumer_ids counter
lastseen_consumer_ids_total {ids}
# TYPE lastseen_consumer_lag_seconds histogram
lastseen_consumer_lag_seconds_bucket{{le="1.0"}} {fast}
lastseen_consumer_lag_seconds_bucket{{le="5.0"}} {slow}
lastseen_consumer_lag_seconds_bucket{{le="+Inf"}} {slow}
lastseen_consumer_lag_seconds_count {slow}
lastseen_consumer_lag_seconds_sum 1.0
"""
SEEN = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)


def reading(at: float, ids: int, fast: int, slow: int, **parts: object) -> Reading:
    defaults: dict[str, object] = {
        "producer": parse_metrics(PRODUCER.format(ids=ids)),
        "consumers": [
            parse_metrics(CONSUMER.format(ids=ids, fast=fast, slow=slow)),
            parse_metrics(CONSUMER.format(ids=0, fast=0, slow=0)),
        ],
        "queues": QueueDepths(work=2, retry=1, dead=3),
        "table": Table(rows=10, oldest_last_seen=SEEN, oldest_age=12.5),
    }
    defaults.update(parts)
    return Reading(at=at, wall=SEEN, **defaults)  # type: ignore[arg-type]


def test_quantile_interpolates_within_the_bucket_as_prometheus_does() -> None:
    assert quantile(0.5, {1.0: 10, 5.0: 20, float("inf"): 20}) == pytest.approx(1.0)
    assert quantile(0.75, {1.0: 10, 5.0: 20, float("inf"): 20}) == pytest.approx(3.0)
    assert quantile(0.99, {1.0: 0, 5.0: 0, float("inf"): 4}) == 5.0
    assert quantile(0.99, {1.0: 0, float("inf"): 0}) is None
    assert quantile(0.99, {}) is None


def test_rates_and_lag_over_the_window() -> None:
    snapshot = summarize([reading(0.0, 100, 0, 0), reading(2.0, 140, 30, 40)])
    values = snapshot.values
    assert values["ids_in_per_s"] == 20.0
    assert values["ids_out_per_s"] == 20.0
    assert values["stored_per_s"] == 20.0
    # 40 rows in the window: 30 under 1 s, 10 between 1 and 5 s
    assert values["lag_p99_s"] == pytest.approx(1 + 4 * (39.6 - 30) / 10)
    assert values["queue_work"] == 2 and values["queue_retry"] == 1
    assert values["queue_dead"] == values["dead_letters"] == 3
    assert values["rows"] == 10 and values["oldest_age_s"] == 12.5
    assert values["oldest_last_seen"] == SEEN.isoformat()
    assert values["spool_depth"] == 4
    assert snapshot.sources == dict.fromkeys(
        ("rabbitmq", "producer", "consumers", "postgresql"), "ok"
    )


def test_a_counter_reset_gives_no_rate_rather_than_a_negative_one() -> None:
    values = summarize([reading(0.0, 100, 5, 5), reading(1.0, 3, 1, 1)]).values
    assert values["ids_in_per_s"] is None
    assert values["lag_p99_s"] is None


def test_a_failed_source_fills_only_its_own_cells() -> None:
    refused = SourceDown("refused", "rabbitmq management API refused the credentials of 'x'")
    away = SourceDown("unreachable", "postgresql: ConnectionRefusedError")
    consumer_away = SourceDown("unreachable", "consumer http://c2:9100: timeout")
    last = reading(1.0, 110, 1, 1, queues=refused, table=away)
    last.consumers[1] = consumer_away
    snapshot = summarize([reading(0.0, 100, 0, 0), last])
    values = snapshot.values
    assert values["queue_work"] == values["queue_dead"] == values["dead_letters"] == "refused"
    assert values["rows"] == values["oldest_last_seen"] == "unreachable"
    # one consumer of two away: a sum over the other would look like a drop
    assert values["ids_out_per_s"] == values["lag_p99_s"] == "unreachable"
    assert values["ids_in_per_s"] == 10.0 and values["spool_depth"] == 4
    assert snapshot.sources["rabbitmq"].startswith("refused: rabbitmq")
    assert "c2:9100" in snapshot.sources["consumers"]
    screen = render_text(snapshot, title="t")
    assert re.search(r"^queue: work +refused$", screen, re.MULTILINE)
    assert "source postgresql  unreachable: postgresql" in screen


def test_the_broker_account_and_api_come_from_amqp_uri() -> None:
    broker = Broker.from_amqp_uri("amqp://u:p@rabbit:5672/vh,amqp://u:p@other:5672/vh")
    assert broker == Broker("http://rabbit:15672", "u", "p", "vh")
    assert Broker.from_amqp_uri("amqp://h/", "http://x:1/").api_url == "http://x:1"


def test_configuration_from_the_environment() -> None:
    args = parser().parse_args([])
    env = {
        "AMQP_URI": "amqp://u:p@127.0.0.1:5672/",
        "QUEUE_NAME": "q",
        "POSTGRES_HOST": "db1,db2",
        "POSTGRES_DB": "d b",
        "POSTGRES_USER": "me",
        "POSTGRES_PASSWORD": "s@cret",
        "CONSUMER_1_METRICS_PORT": "9101",
    }
    config = build_config(args, env)
    assert config.dsn == "postgresql://me:s%40cret@db1:5432/d%20b"
    assert config.consumers == ["http://127.0.0.1:9101"]
    assert config.producer == "http://127.0.0.1:9090"
    with pytest.raises(ConfigurationError, match="QUEUE_NAME"):
        build_config(argparse.Namespace(**vars(args)), {**env, "QUEUE_NAME": ""})


def test_a_missing_setting_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.chdir(tmp_path)  # type: ignore[arg-type]
    for name in ("AMQP_URI", "QUEUE_NAME", "POSTGRES_HOST", "POSTGRES_DB"):
        monkeypatch.delenv(name, raising=False)
    assert main(["--once"]) == 2
    error = capsys.readouterr().err
    assert (
        error == "liveview: configuration error: AMQP_URI is not set (environment or --env-file)\n"
    )
    assert main(["--once", "--env-file", "nowhere.env"]) == 2
    assert "--env-file nowhere.env: no such file" in capsys.readouterr().err
