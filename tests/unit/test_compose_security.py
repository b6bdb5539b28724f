"""The hardening in docker-compose.yml and the production override, read from the files."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
APP_MODULES = {"producer", "consumer", "routine", "tester"}
SECRET_VARIABLES = {"AMQP_URI", "POSTGRES_PASSWORD", "CALLBACK_SIGNING_SECRETS"}


class _ComposeLoader(yaml.SafeLoader):
    """Compose's merge tags: ``!reset`` (drop the base value) and ``!override``."""


def _tagged(tag: str) -> Any:
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
        if isinstance(node, yaml.SequenceNode):
            value: Any = loader.construct_sequence(node)
        elif isinstance(node, yaml.MappingNode):
            value = loader.construct_mapping(node)
        else:
            value = loader.construct_scalar(node)  # type: ignore[arg-type]
        return {"__tag__": tag, "value": value}

    return construct


_ComposeLoader.add_constructor("!reset", _tagged("reset"))
_ComposeLoader.add_constructor("!override", _tagged("override"))


def load(name: str) -> dict[str, Any]:
    return yaml.load((ROOT / name).read_text(), Loader=_ComposeLoader)


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


def test_both_files_merge_when_compose_v2_is_installed(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    probe = (
        subprocess.run([docker, "compose", "version"], capture_output=True, check=False)
        if docker
        else None
    )
    if probe is None or probe.returncode != 0:
        pytest.skip("the docker compose v2 plugin is not installed")
    secrets = ROOT / "secrets"
    created = not secrets.exists()
    if created:
        secrets.mkdir()
        for name in PROD["secrets"]:
            (secrets / name).write_text("x\n")
    try:
        result = subprocess.run(
            [
                docker,
                "compose",
                "-f",
                "docker-compose.yml",
                "-f",
                "docker-compose.prod.yml",
                "config",
                "--format",
                "json",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        if created:
            shutil.rmtree(secrets)
    assert result.returncode == 0, result.stderr
    merged = json.loads(result.stdout)["services"]
    assert not merged["rabbitmq"].get("ports")
    assert not merged["db"].get("ports")
