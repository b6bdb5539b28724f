"""Absurd configuration, for every service: exit code 2, one line on stderr naming each bad
variable, no traceback, nothing on stdout (no log line: the service never started).

One run per service carries many absurd values at once (the line must name every one of them);
cross-field rules, which only apply once every field is valid, get runs of their own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.processes import run_module

pytestmark = pytest.mark.integration

AMQP = {"AMQP_URI": "amqp://guest:guest@127.0.0.1:5672/", "QUEUE_NAME": "q"}
POSTGRES = {"POSTGRES_HOST": "127.0.0.1", "POSTGRES_DB": "x", "POSTGRES_USER": "x"}
BASE = {
    "producer": AMQP,
    "consumer": {**AMQP, **POSTGRES, "TESTER_ENDPOINT": "http://127.0.0.1:9"},
    "routine": POSTGRES,
    "tester": {"CALLBACK_ENDPOINT": "http://127.0.0.1:9"},
}
ABSURD_SHARED = {
    "LOG_LEVEL": "verbose",
    "LOG_FORMAT": "xml",
    "STARTUP_TIMEOUT": "-5s",
}
ABSURD = {
    "producer": {
        "PRODUCER_PORT": "99999999999999999999999",
        "IDS_PER_MESSAGE": "0",
        "MAX_BODY_BYTES": "1e9",
        "MAX_IDS_PER_CALLBACK": "-1",
        "PUBLISH_TIMEOUT": "nan",
        "RELAY_BATCH_SIZE": "1000000000",
        "RELAY_PUBLISH_TIMEOUT": "0s",
        "BROKER_MAX_BACKOFF": "inf",
        "SHUTDOWN_GRACE": "forever",
        "AMQP_URI": "http://127.0.0.1:5672/",
        "QUEUE_NAME": "work queue; DROP",
    },
    "consumer": {
        "MAX_CONSUMERS": "0",
        "STATUS_TIMEOUT": "-1",
        "MAX_ATTEMPTS": "1000000",
        "BATCH_MAX_ROWS": "1.5",
        "BATCH_MAX_DELAY": "1 second",
        "PREFETCH": "70000",
        "WATCHDOG_INTERVAL": "0",
        "TESTER_ENDPOINT": "not a url",
        "POSTGRES_PORT": "0",
        "POSTGRES_POOL_SIZE": "100000",
        "QUEUE_NAME": "x" * 300,
    },
    "routine": {
        "ROUTINE_INTERVAL": "∞",
        "OBJECT_TTL": "1e3",
        "ROUTINE_BATCH_SIZE": "10000000000",
        "ROUTINE_BATCH_PAUSE": "-1ms",
        "ROUTINE_MAX_BACKOFF": "-30s",
        "POSTGRES_HOST": "",
        "POSTGRES_PORT": "-1",
    },
    "tester": {
        "TESTER_PORT": "65536",
        "TESTER_INTERVAL": "0",
        "TESTER_ID_RANGE": "0",
        "TESTER_MAX_IDS": "-1",
        "TESTER_ERROR_RATE": "nan",
        "TESTER_HANG_RATE": "1.5",
        "TESTER_SEED": "lucky",
        "TESTER_CALLBACK_TIMEOUT": "0ms",
        "TESTER_LEDGER_SIZE": "0",
        "CALLBACK_ENDPOINT": "ftp://producer",
    },
}
# Rules between fields: each needs otherwise valid values to be checked at all.
CROSS_FIELD = [
    ("consumer", {"RETRY_BASE_DELAY": "10s", "RETRY_MAX_DELAY": "5s"}, "RETRY_BASE_DELAY"),
    ("consumer", {"RETRY_MAX_DELAY": "1h"}, "RETRY_MAX_DELAY"),
    ("consumer", {"TESTER_ENDPOINT": "http://tester:9010/?x=1"}, "TESTER_ENDPOINT"),
    ("tester", {"TESTER_DELAY_MIN": "5s", "TESTER_DELAY_MAX": "1s"}, "TESTER_DELAY_MAX"),
    ("tester", {"TESTER_ERROR_RATE": "0.6", "TESTER_GARBAGE_RATE": "0.6"}, "TESTER_GARBAGE_RATE"),
]


def _refused(service: str, env: dict[str, str], tmp_path: Path) -> str:
    result = run_module(service, env, tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{service}: configuration error: ")
    return lines[0]


@pytest.mark.parametrize("service", sorted(ABSURD))
def test_absurd_values_stop_the_service_with_one_line_naming_each(
    service: str, tmp_path: Path
) -> None:
    absurd = {**ABSURD_SHARED, **ABSURD[service]}
    line = _refused(service, {**BASE[service], **absurd}, tmp_path)
    unnamed = [name for name in absurd if name not in line]
    assert unnamed == [], line


@pytest.mark.parametrize(("service", "values", "variable"), CROSS_FIELD)
def test_contradictory_values_stop_the_service_naming_the_variable(
    service: str, values: dict[str, str], variable: str, tmp_path: Path
) -> None:
    assert variable in _refused(service, {**BASE[service], **values}, tmp_path)
