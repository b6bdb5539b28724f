"""Generated requests against the producer's own OpenAPI document (schemathesis), on the real
process and broker: no server error, answers as documented, nothing enqueued for a rejected body.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Ok

from common.messages import decode_message
from tests.support.ports import free_port
from tests.support.processes import ServiceProcess
from tests.support.services import Endpoints

pytestmark = pytest.mark.integration

# Valid bodies, then bodies that break the schema (wrong types, missing key, wrong media type).
EXAMPLES = {GenerationMode.POSITIVE: 450, GenerationMode.NEGATIVE: 750}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _ready(url: str) -> bool:
    try:
        return bool(httpx.get(f"{url}/ready", timeout=1).json().get("broker") == "connected")
    except httpx.HTTPError:
        return False


async def _queued(endpoints: Endpoints, queue: str) -> Counter[str]:
    """Ids per callback id in the work queue (taken off it)."""
    connection = await aio_pika.connect(endpoints.amqp_uri)
    found: Counter[str] = Counter()
    try:
        channel = await connection.channel()
        work = await channel.declare_queue(queue, passive=True)
        while (message := await work.get(no_ack=True, fail=False)) is not None:
            decoded = decode_message(message.body)
            found[decoded.callback_id] += len(decoded.ids)
    finally:
        await connection.close()
    return found


async def test_generated_requests_get_documented_answers_and_rejects_enqueue_nothing(
    spawn: Callable[..., ServiceProcess], endpoints: Endpoints, queue_name: str, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    producer = spawn(
        "producer",
        {
            "AMQP_URI": endpoints.amqp_uri,
            "QUEUE_NAME": queue_name,
            "PRODUCER_HOST": "127.0.0.1",
            "PRODUCER_PORT": str(port),
            "SPOOL_PATH": str(tmp_path / "spool.sqlite3"),
            "LOG_LEVEL": "warning",
        },
    )
    producer.wait_ready(lambda: _ready(url))
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    statuses: Counter[int] = Counter()
    accepted: Counter[str] = Counter()
    session = requests.Session()

    for operation in schema.get_all_operations():
        assert isinstance(operation, Ok), operation
        api = operation.ok()
        for mode, examples in EXAMPLES.items():
            if api.method.upper() != "POST" and mode is GenerationMode.NEGATIVE:
                continue  # GET /health and /ready take no input to get wrong

            @settings(
                max_examples=examples if api.method.upper() == "POST" else 20,
                deadline=None,
                database=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(api.as_strategy(generation_mode=mode))
            def exercise(case: schemathesis.Case[Any]) -> None:
                response = case.call(base_url=url, session=session, timeout=10)
                statuses[response.status_code] += 1
                case.validate_response(response, checks=CHECKS)
                if case.method == "POST" and response.status_code == 202:
                    body = response.json()
                    accepted[body["callback_id"]] += body["accepted"]
                elif case.method == "POST":
                    assert 400 <= response.status_code < 500, response.text
                    assert set(response.json()) == {"error", "detail"}

            exercise()

    assert sum(statuses.values()) >= 1000, statuses
    assert not [status for status in statuses if status >= 500], statuses
    assert statuses[202] > 0 and sum(n for s, n in statuses.items() if 400 <= s < 500) > 0
    # Every queued id belongs to an accepted callback, every accepted id is queued: a rejected
    # body put nothing on the queue.
    assert await _queued(endpoints, queue_name) == +accepted
    assert "Traceback" not in producer.output()
