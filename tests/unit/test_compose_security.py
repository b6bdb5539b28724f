"""The hardening in docker-compose.yml and the production override, read from the files."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.support.compose_files import load_compose as load

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
APP_MODULES = {"producer", "consumer", "routine", "tester"}
SECRET_VARIABLES = {"AMQP_URI", "POSTGRES_PASSWORD", "CALLBACK_SIGNING_SECRETS"}


BASE = load("docker-compose.yml")
PROD = load("docker-compose.prod.yml")
SERVICES: dict[str, dict[str, Any]] = BASE["services"]


def app_services() -> list[str]:
    return [
        name
        for name, spec in SERVICES.items()
        if (spec.get("command") or [])[2:] and spec["command"][2] in APP_MODULES
    ]


def test_every_service_drops_capabilities_and_privilege_gain() -> None:
    for name, spec in SERVICES.items():
        assert spec.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in spec.get("security_opt", []), name


def test_app_services_run_on_a_read_only_root_with_tmpfs_and_no_added_capability() -> None:
    assert set(app_services()) >= {"producer", "consumer", "routine", "tester"}
    for name in app_services():
        spec = SERVICES[name]
        assert spec.get("read_only") is True, name
        assert "/tmp" in spec.get("tmpfs", []), f"{name}: the heartbeat file needs a tmpfs"
        assert not spec.get("cap_add"), name
        assert not spec.get("privileged"), name


def test_the_spool_is_on_its_volume() -> None:
    producer = SERVICES["producer"]
    spool_dir = str(Path(producer["environment"]["SPOOL_PATH"]).parent)
    mounts = [volume.split(":")[1] for volume in producer.get("volumes", [])]
    assert spool_dir in mounts
    assert producer["volumes"][0].split(":")[0] in BASE["volumes"]


def test_production_publishes_no_broker_or_database_port() -> None:
    for name in ("rabbitmq", "db"):
        assert SERVICES[name].get("ports"), f"the base file publishes {name} for development"
        assert PROD["services"][name]["ports"] == {"__tag__": "reset", "value": []}, name


def test_production_reads_every_secret_from_a_mounted_file() -> None:
    declared = PROD["secrets"]
    for name, spec in PROD["services"].items():
        environment = spec.get("environment", {})
        for variable, value in environment.items():
            if variable in SECRET_VARIABLES:
                assert value == "", f"{name}: {variable} must come from its _FILE"
            match = re.fullmatch(r"/run/secrets/(\w+)", str(value))
            if variable.endswith("_FILE"):
                assert match, (name, variable, value)
                assert match.group(1) in spec["secrets"], (name, variable)
                assert match.group(1) in declared
    for secret in declared.values():
        assert secret["file"].startswith("./secrets/")
    assert "secrets/" in (ROOT / ".gitignore").read_text().splitlines()
    for name in app_services():
        if name in ("producer", "consumer"):
            assert "AMQP_URI_FILE" in PROD["services"][name]["environment"], name
        if name in ("consumer", "routine"):
            assert "POSTGRES_PASSWORD_FILE" in PROD["services"][name]["environment"], name
