"""Secrets from ``NAME_FILE``: real processes read them; a missing or unreadable file stops the
service with exit code 2 and one line naming the variable, never the value."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import orjson
import pytest

from common.webhooks import new_secret, sign
from tests.support.ports import free_port
from tests.support.processes import Spawn, run_module
from tests.support.producer import producer_env, wait_broker_connected
from tests.support.services import Endpoints

pytestmark = pytest.mark.integration

KEY = b"F" * 32
TOKEN = "file-token-" + "y" * 16
BODY = orjson.dumps({"object_ids": [10, 12]})


def secret_file(directory: Path, name: str, value: str) -> str:
    path = directory / name
    path.write_text(value + "\n")  # as `echo value > file` writes it
    path.chmod(0o400)
    return str(path)


def test_the_producer_reads_its_uri_and_callback_secrets_from_files(
    spawn: Spawn, endpoints: Endpoints, queue_name: str, tmp_path: Path
) -> None:
    port = free_port()
    env = producer_env("amqp://ignored:ignored@127.0.0.1:1/", queue_name, tmp_path / "s.db", port)
    env |= {
        # NAME_FILE wins over NAME: the broker named in AMQP_URI above does not exist.
        "AMQP_URI_FILE": secret_file(tmp_path, "amqp_uri", endpoints.amqp_uri),
        "CALLBACK_SIGNING_SECRETS_FILE": secret_file(tmp_path, "signing", new_secret(KEY)),
        "CALLBACK_BEARER_TOKEN_FILE": secret_file(tmp_path, "token", TOKEN),
    }
    producer = spawn("producer", env)
    wait_broker_connected(producer, port)
    url = f"http://127.0.0.1:{port}/callback"
    plain = {"Content-Type": "application/json"}
    assert httpx.post(url, content=BODY, headers=plain, timeout=5).status_code == 401
    headers = {
        **plain,
        **sign([KEY], "msg_f", int(time.time()), BODY),
        "Authorization": f"Bearer {TOKEN}",
    }
    answer = httpx.post(url, content=BODY, headers=headers, timeout=5)
    assert answer.status_code == 202, answer.text
    assert answer.json()["spooled"] is False


def test_consumer_and_routine_read_the_uri_and_password_from_files(
    spawn: Spawn, service_env: dict[str, str], tmp_path: Path
) -> None:
    env = {k: v for k, v in service_env.items() if k not in ("AMQP_URI", "POSTGRES_PASSWORD")}
    env |= {
        "AMQP_URI_FILE": secret_file(tmp_path, "amqp_uri", service_env["AMQP_URI"]),
        "POSTGRES_PASSWORD_FILE": secret_file(
            tmp_path, "pg", service_env["POSTGRES_PASSWORD"] or "unused-by-trust-auth"
        ),
    }
    consumer = spawn("consumer", {**env, "TESTER_ENDPOINT": "http://127.0.0.1:9"})
    routine = spawn("routine", env)
    consumer.wait_for_log('"subscribed"')
    routine.wait_for_log('"routine_started"')


@pytest.mark.parametrize(
    ("module", "problem"),
    [
        ("producer", "missing"),
        ("consumer", "missing"),
        ("routine", "missing"),
        ("tester", "missing"),
        ("consumer", "a directory"),
        ("routine", "empty variable"),
    ],
)
def test_an_unreadable_secret_file_exits_2_with_one_line(
    service_env: dict[str, str], tmp_path: Path, module: str, problem: str
) -> None:
    variable = {
        "producer": "CALLBACK_SIGNING_SECRETS_FILE",
        "consumer": "AMQP_URI_FILE",
        "routine": "POSTGRES_PASSWORD_FILE",
        "tester": "CALLBACK_BEARER_TOKEN_FILE",
    }[module]
    path = {"missing": str(tmp_path / "nope"), "a directory": str(tmp_path), "empty variable": ""}
    env = {
        **service_env,
        "SPOOL_PATH": str(tmp_path / "spool.db"),
        "TESTER_ENDPOINT": "http://127.0.0.1:9",
        "CALLBACK_ENDPOINT": "http://127.0.0.1:9",
        variable: path[problem],
    }
    done = run_module(module, env, tmp_path / "run")
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"{module}: configuration error: {variable}")
    assert done.stdout == ""
