"""``STORE=redis`` at the command line: a bad Redis setting exits 2 with one line naming it (the
password never shown), a refused password exits 1 with one line, and the routine has nothing to
do. None of these runs has a ``POSTGRES_*`` setting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.processes import run_module
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.integration

CONSUMER = {
    "AMQP_URI": "amqp://guest:guest@127.0.0.1:5672/",
    "QUEUE_NAME": "q",
    "TESTER_ENDPOINT": "http://127.0.0.1:9",
    "STORE": "redis",
}


def _one_line(service: str, env: dict[str, str], tmp_path: Path) -> str:
    result = run_module(service, env, tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{service}: configuration error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"REDIS_URL": "http://u:hunter2@127.0.0.1:6379"}, "must start with redis://"),
        ({"REDIS_URL": "redis://u:hunter2@127.0.0.1:99999/0"}, "Port out of range"),
        ({"REDIS_URL": "redis://u:hunter2@127.0.0.1:6379/sixteen"}, "database"),
        ({"REDIS_URL": "redis://u:hunter2@h1:7000,,h3:7000"}, "entry 2 of 3 is empty"),
        ({"REDIS_URL": "redis://u:hunter2@h1:7000,redis://x:hunter2@h2:7000"}, "entry 2 of 2"),
        ({"REDIS_URL": "redis://u:hunter2@h1:7000/3,h2:7000"}, "database 0 only"),
        ({}, "REDIS_URL is required with STORE=redis"),
        ({"STORE": "memcached"}, "STORE"),
        (
            {"REDIS_URL": "redis://u:hunter2@h1:7000,h2:7000", "REDIS_MIN_REPLICAS": "1"},
            "REDIS_MIN_REPLICAS",
        ),
        ({"REDIS_URL": "redis://h:6379", "REDIS_TLS_CA": "/nowhere.pem"}, "rediss://"),
        ({"REDIS_URL": "rediss://h:6379", "REDIS_TLS_CA": "/nowhere.pem"}, "REDIS_TLS_CA"),
        ({"REDIS_URL": "redis://h:6379", "REDIS_KEY_PREFIX": ""}, "REDIS_KEY_PREFIX"),
    ],
)
def test_a_bad_redis_setting_exits_2_naming_it_without_the_password(
    values: dict[str, str], named: str, tmp_path: Path
) -> None:
    line = _one_line("consumer", {**CONSUMER, **values}, tmp_path)
    assert named in line
    assert "hunter2" not in line


def test_a_redis_url_file_is_read_like_the_other_secrets(tmp_path: Path) -> None:
    secret = tmp_path / "redis-url"
    secret.write_text("ftp://u:hunter2@h:1\n")
    line = _one_line("consumer", {**CONSUMER, "REDIS_URL_FILE": str(secret)}, tmp_path)
    assert "REDIS_URL" in line
    assert "hunter2" not in line


def test_a_refused_password_exits_1_with_one_line(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", config={"requirepass": "right"}).start()
    try:
        env = {**CONSUMER, "REDIS_URL": f"redis://:wrong@127.0.0.1:{server.port}/0"}
        result = run_module("consumer", env, tmp_path / "run")
    finally:
        server.remove()
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [
        json.loads(line)
        for line in result.stdout.splitlines()
        if line.startswith("{") and json.loads(line).get("level") == "error"
    ]
    assert len(errors) == 1, result.stdout
    assert "REDIS_URL" in errors[0]["error"]
    assert "wrong" not in result.stdout + result.stderr


def test_the_routine_has_nothing_to_do_with_redis(tmp_path: Path) -> None:
    result = run_module("routine", {"STORE": "redis"}, tmp_path, timeout=10)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines() == [
        "routine: STORE=redis: nothing to do, Redis keys expire by themselves (OBJECT_TTL after "
        "their last_seen)"
    ]
