"""Library logs reach the services' JSON lines, Google's included (its clients keep their
"google" logger from propagating unless it is configured in code), and a Pub/Sub helper thread's
error from an outage is a warning without a traceback while the consumer runs on Pub/Sub
(consumer.pubsub.lease_thread_warnings), while any other error keeps its own."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest

pytestmark = pytest.mark.unit

SCRIPT = """
import logging
from google.api_core import client_logging, exceptions
from common.log import configure_logging
from consumer.pubsub import lease_thread_warnings

configure_logging("consumer", "info", "json")
client_logging.initialize_logging()  # what a Google client does when it is built
worker = logging.getLogger("google.cloud.pubsub_v1.subscriber._protocol.helper_threads")
gave_up = exceptions.RetryError("Timeout of 60.0s exceeded", None)
with lease_thread_warnings():  # as open_pubsub runs the consumer
    try:
        raise gave_up
    except exceptions.RetryError as exc:
        worker.exception("Error in queue callback worker: %s", exc)
    try:
        raise ValueError("a bug of ours")
    except ValueError as exc:
        worker.exception("Error in queue callback worker: %s", exc)
"""


def test_google_logs_are_json_lines_and_an_outage_carries_no_traceback() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stderr == ""
    lines = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert [(line["level"], line["service"]) for line in lines] == [
        ("warning", "consumer"),
        ("error", "consumer"),
    ]
    outage, bug = lines
    assert "Timeout of 60.0s exceeded" in outage["event"]
    assert "exc_info" not in outage
    assert "exception" not in outage
    assert "ValueError('a bug of ours')" in bug["exc_info"]
