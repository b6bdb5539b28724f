"""The compose files as Compose v2 merges them (the engine's own CLI plugin)."""

import json
import os
import shutil
import subprocess

import pytest

from tests.support.compose import Engine
from tests.support.compose_files import load_compose
from tests.support.processes import PROJECT_ROOT as ROOT

pytestmark = pytest.mark.compose

PROD = load_compose("docker-compose.prod.yml")


def test_the_prod_override_merges_without_broker_or_database_ports(engine: Engine) -> None:
    docker = "docker"
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
            env={**os.environ, **engine.env},
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
