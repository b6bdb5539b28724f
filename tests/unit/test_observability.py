"""The shipped Prometheus config, alert rules (with promtool's own unit tests), Grafana
provisioning and dashboard: checked without any service running."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.prometheus import OBSERVABILITY, ensure_prometheus, promtool, shipped_config

pytestmark = pytest.mark.unit

ROOT = OBSERVABILITY.parents[1]
GRAFANA = OBSERVABILITY / "grafana"
DASHBOARD: dict[str, Any] = json.loads((GRAFANA / "dashboards" / "lastseen.json").read_text())
ALERTS = yaml.safe_load((OBSERVABILITY / "alerts.yml").read_text())
ALERT_TESTS = yaml.safe_load((OBSERVABILITY / "alerts.test.yml").read_text())
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def has_promtool() -> None:
    why_not = ensure_prometheus()
    if why_not:
        pytest.fail(why_not)


def alert_names() -> list[str]:
    return [rule["alert"] for group in ALERTS["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    return [target["expr"] for panel in DASHBOARD["panels"] for target in panel["targets"]]


def test_promtool_check_config(has_promtool: None) -> None:
    checked = promtool("check", "config", "prometheus.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


def test_promtool_check_rules(has_promtool: None) -> None:
    checked = promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alert_names())} rules found" in checked.stdout


def test_promtool_unit_tests_of_the_alerts_pass(has_promtool: None) -> None:
    tested = promtool("test", "rules", "alerts.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_promtool_test_rules_fails_on_a_wrong_expectation(
    has_promtool: None, tmp_path: Path
) -> None:
    """The rule tests can fail: flip one expectation and promtool must say so."""
    broken = yaml.safe_load(yaml.safe_dump(ALERT_TESTS))
    broken["rule_files"] = [str(OBSERVABILITY / "alerts.yml")]
    case = broken["tests"][0]["alert_rule_test"][0]
    assert case["exp_alerts"], "the first case is expected to fire"
    case["exp_alerts"] = []
    (tmp_path / "broken.test.yml").write_text(yaml.safe_dump(broken))
    assert promtool("test", "rules", "broken.test.yml", cwd=tmp_path).returncode != 0


def test_every_alert_is_tested_to_fire_and_to_stay_silent() -> None:
    required = {
        "LastseenDeadLettersGrowing",
        "LastseenLagAboveTTL",
        "LastseenSpoolNotDraining",
        "LastseenConsumerPaused",
        "LastseenRoutineFailing",
        "LastseenNoCallbacks",
    }
    assert required <= set(alert_names())
    fires: set[str] = set()
    silent: set[str] = set()
    for test in ALERT_TESTS["tests"]:
        for case in test["alert_rule_test"]:
            (fires if case["exp_alerts"] else silent).add(case["alertname"])
    assert fires == set(alert_names())
    assert silent == set(alert_names())


def test_every_alert_has_a_severity_and_a_runbook_in_the_operations_guide() -> None:
    guide = (ROOT / "docs" / "operations.md").read_text()
    assert "\n## Alerts\n" in guide, "the runbook's anchor #alerts is a heading"
    for group in ALERTS["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in {"page", "ticket"}, rule["alert"]
            assert rule["annotations"]["runbook"] == "docs/operations.md#alerts"
            assert f"`{rule['alert']}`" in guide, f"operations.md does not explain {rule['alert']}"


def test_the_scrape_config_covers_every_service_at_its_compose_port() -> None:
    jobs = {job["job_name"]: job for job in shipped_config()["scrape_configs"]}
    assert set(jobs) == {"producer", "consumer", "routine", "tester", "rabbitmq"}
    (consumers,) = jobs["consumer"]["dns_sd_configs"]
    assert consumers["names"] == ["consumer"] and consumers["type"] == "A"
    services = COMPOSE["services"]
    assert str(consumers["port"]) == str(services["consumer"]["environment"]["METRICS_PORT"])
    static = {
        name: job["static_configs"][0]["targets"]
        for name, job in jobs.items()
        if "static_configs" in job
    }
    assert static["producer"] == ["producer:9090"]
    assert static["tester"] == ["tester:9010"]
    assert static["routine"] == [f"routine:{services['routine']['environment']['METRICS_PORT']}"]
    assert static["rabbitmq"] == ["rabbitmq:15692"]
    assert jobs["rabbitmq"]["metrics_path"] == "/metrics/per-object"


def test_the_dashboard_is_a_grafana_dashboard_of_the_stated_schema() -> None:
    guide = (ROOT / "docs" / "operations.md").read_text()
    stated = re.search(r"schemaVersion (\d+)", guide)
    assert stated, "docs/operations.md states the dashboard's schemaVersion"
    assert DASHBOARD["schemaVersion"] == int(stated.group(1))
    assert DASHBOARD["uid"] == "lastseen" and DASHBOARD["title"]
    ids = [panel["id"] for panel in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    datasource = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"][0]
    for panel in DASHBOARD["panels"]:
        assert panel["type"] == "timeseries", panel["title"]
        assert panel["datasource"]["uid"] == datasource["uid"]
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert panel["targets"] and panel["description"], panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == datasource["uid"]
            # The e2e test evaluates each expression as it is: no Grafana variables in them.
            assert "$" not in target["expr"], target["expr"]


def test_the_dashboard_has_the_operators_panels() -> None:
    exprs = "\n".join(dashboard_exprs())
    for needle in (
        "lastseen_producer_ids_total",  # ids/s in
        "lastseen_consumer_lag_seconds_count",  # stored
        "histogram_quantile(0.99, sum by (le) (rate(lastseen_consumer_lag_seconds_bucket",
        "histogram_quantile(0.5, sum by (le) (rate(lastseen_consumer_lag_seconds_bucket",
        "lastseen_consumer_status_seconds_bucket",
        "rabbitmq_queue_messages{queue=~",  # retry and dead
        "lastseen_consumer_status_in_flight",
        "lastseen_producer_spool_depth",
        "lastseen_consumer_dead_total",
        "lastseen_routine_deleted_rows_total",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ):
        assert needle in exprs, needle


def test_grafana_provisioning_points_at_the_dashboards_folder() -> None:
    providers = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "lastseen.yml").read_text()
    )["providers"]
    grafana = COMPOSE["services"]["grafana"]
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in grafana["volumes"]}
    dashboards = providers[0]["options"]["path"]
    assert dashboards in mounts
    assert (ROOT / mounts[dashboards]).resolve() == (GRAFANA / "dashboards").resolve()


def test_the_observability_profile_starts_prometheus_and_grafana_only_on_request() -> None:
    services = COMPOSE["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["observability"], name
    for name, spec in services.items():
        if name not in ("prometheus", "grafana"):
            assert "profiles" not in spec, f"{name} would not start with a plain `up`"
    prometheus = services["prometheus"]
    mounted = {volume.split(":")[0] for volume in prometheus["volumes"]}
    assert "./deploy/observability/prometheus.yml" in mounted
    assert "./deploy/observability/alerts.yml" in mounted
