"""The live view's pure parts: quantiles, rates over a window, cells of sources that failed, the
screen, and its configuration errors."""

from __future__ import annotations

import re
import ssl
from datetime import UTC, datetime
from pathlib import Path

import pytest

from liveview.__main__ import main
from liveview.settings import load_config
from liveview.snapshot import Reading, quantile, render_text, summarize
from liveview.sources import Broker, QueueDepths, SourceDown, Table, parse_metrics
from tests.support.certificates import CertificateAuthority

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


ENV = {
    "AMQP_URI": "amqp://u:p@127.0.0.1:5672/",
    "QUEUE_NAME": "q",
    "POSTGRES_HOST": "db1,db2",
    "POSTGRES_DB": "d b",
    "POSTGRES_USER": "me",
    "POSTGRES_PASSWORD": "s@cret",
    "CONSUMER_1_METRICS_PORT": "9101",
}
VARIABLES = (
    *ENV,
    "POSTGRES_PORT",
    "POSTGRES_PASSWORD_FILE",
    "POSTGRES_SSLMODE",
    "POSTGRES_SSLROOTCERT",
    "AMQP_URI_FILE",
    "CALLBACK_ENDPOINT",
    "CONSUMER_2_METRICS_PORT",
    "STORE",
    "REDIS_URL",
    "REDIS_URL_FILE",
    "REDIS_KEY_PREFIX",
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No setting from the machine's environment or a .env in the working directory."""
    monkeypatch.chdir(tmp_path)
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def env_file(path: Path, values: dict[str, str]) -> str:
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    return str(path)


def test_configuration_through_the_services_settings_models(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = load_config([env_file(tmp_path / "a.env", ENV)])
    assert config.database is not None and config.redis is None
    assert config.store_name == "postgresql"
    # every host of the list, following the one that accepts writes, as the consumer does
    assert config.database.dsn == (
        "postgresql://me:s%40cret@db1:5432,db2:5432/d%20b?target_session_attrs=read-write"
    )
    assert config.database.ssl == "prefer" and config.database.user == "me"
    assert config.consumers == ["http://127.0.0.1:9101"]
    assert config.producer == "http://127.0.0.1:9090"
    assert config.broker == Broker("http://127.0.0.1:15672", "u", "p", "/")
    assert config.queue_name == "q"


def test_secrets_from_files_and_tls_settings_as_the_services_read_them(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "password").write_text("from-file\n")
    (tmp_path / "amqp_uri").write_text("amqp://filed:pw@rabbit-1:5672/vh,amqp://filed:pw@r2/vh\n")
    ca = CertificateAuthority().write_ca(tmp_path / "ca.crt")
    files = [
        env_file(tmp_path / "base.env", {**ENV, "POSTGRES_HOST": "db", "POSTGRES_PORT": "6432"}),
        env_file(
            tmp_path / "prod.env",
            {
                "POSTGRES_PASSWORD_FILE": str(tmp_path / "password"),
                "AMQP_URI_FILE": str(tmp_path / "amqp_uri"),
                "POSTGRES_SSLMODE": "verify-full",
                "POSTGRES_SSLROOTCERT": str(ca),
            },
        ),
    ]
    clean_env.setenv("CALLBACK_ENDPOINT", "http://producer:9090/")
    config = load_config(files)
    assert config.database is not None
    assert config.database.dsn == "postgresql://me:from-file@db:6432/d%20b"
    assert isinstance(config.database.ssl, ssl.SSLContext)
    assert (
        config.database.ssl.check_hostname and config.database.ssl.verify_mode == ssl.CERT_REQUIRED
    )
    assert config.broker == Broker("http://rabbit-1:15672", "filed", "pw", "vh")
    assert config.producer == "http://producer:9090"


def test_flags_override_the_settings_and_dsn_needs_no_postgres_settings(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    values = {k: v for k, v in ENV.items() if not k.startswith("POSTGRES_")}
    config = load_config(
        [env_file(tmp_path / "a.env", values)],
        producer="http://p:1",
        consumers=["http://c:2", "http://c:3"],
        rabbitmq="http://mgmt:15672/",
        dsn="postgresql://who:pw@h:5/db?sslmode=require",
    )
    assert config.producer == "http://p:1" and config.consumers == ["http://c:2", "http://c:3"]
    assert config.broker.api_url == "http://mgmt:15672"
    assert config.database is not None
    assert config.database.ssl is None and config.database.user == "who"


def test_a_missing_or_bad_setting_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert main(["--once"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("liveview: configuration error: ")
    for name in ("AMQP_URI", "QUEUE_NAME", "POSTGRES_HOST", "POSTGRES_DB", "POSTGRES_USER"):
        assert f"{name} is required but not set" in error
    assert error.count("\n") == 1
    assert main(["--once", "--env-file", "nowhere.env"]) == 2
    assert capsys.readouterr().err == (
        "liveview: configuration error: --env-file nowhere.env: no such file\n"
    )
    bad = env_file(tmp_path / "bad.env", {**ENV, "POSTGRES_SSLMODE": "sometimes"})
    assert main(["--once", "--env-file", bad]) == 2
    error = capsys.readouterr().err
    assert "POSTGRES_SSLMODE" in error and error.count("\n") == 1
    missing = env_file(
        tmp_path / "missing.env", {**ENV, "POSTGRES_PASSWORD_FILE": str(tmp_path / "none")}
    )
    assert main(["--once", "--env-file", missing]) == 2
    assert capsys.readouterr().err.startswith(
        "liveview: configuration error: POSTGRES_PASSWORD_FILE: cannot read"
    )


def test_with_store_redis_the_view_reads_redis_settings_and_no_postgres_ones(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    values = {k: v for k, v in ENV.items() if not k.startswith("POSTGRES_")}
    redis = {"STORE": "redis", "REDIS_URL": "redis://:pw@cache:6380/2", "REDIS_KEY_PREFIX": "o:"}
    config = load_config([env_file(tmp_path / "a.env", {**values, **redis})])
    assert config.database is None and config.redis is not None
    assert config.store_name == "redis"
    assert config.redis.redis_target.nodes == (("cache", 6380),)
    assert config.redis.redis_target.db == 2 and config.redis.redis_key_prefix == "o:"


def test_store_redis_without_redis_url_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    values = {k: v for k, v in ENV.items() if not k.startswith("POSTGRES_")}
    path = env_file(tmp_path / "a.env", {**values, "STORE": "redis"})
    assert main(["--once", "--env-file", path]) == 2
    assert capsys.readouterr().err == (
        "liveview: configuration error: REDIS_URL is required with STORE=redis "
        "(nor REDIS_URL_FILE)\n"
    )
    bad = env_file(tmp_path / "b.env", {**values, "STORE": "redis", "REDIS_URL": "http://x"})
    assert main(["--once", "--env-file", bad]) == 2
    error = capsys.readouterr().err
    assert error.startswith("liveview: configuration error: ") and "REDIS_URL" in error
    assert error.count("\n") == 1


def test_the_redis_store_is_its_own_source_on_the_screen() -> None:
    away = SourceDown("unreachable", "redis: ConnectionRefusedError")
    ok = summarize([reading(0.0, 100, 0, 0, store="redis"), reading(1.0, 110, 1, 1, store="redis")])
    assert ok.sources["redis"] == "ok" and "postgresql" not in ok.sources
    assert ok.values["rows"] == 10
    screen = render_text(ok, title="t")
    assert re.search(r"^objects stored +10$", screen, re.MULTILINE)
    down = summarize([reading(0.0, 100, 0, 0, table=away, store="redis")])
    assert down.values["rows"] == "unreachable"
    assert "source redis       unreachable: redis" in render_text(down, title="t")
