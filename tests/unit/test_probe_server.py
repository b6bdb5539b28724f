"""/metrics, /health and /ready of the consumer and the routine (common.metrics.ProbeServer)."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client import Counter

from common.metrics import ProbeServer, readiness, service_registry
from tests.support.ports import free_port

pytestmark = pytest.mark.unit


def test_ready_only_when_every_check_passes() -> None:
    assert readiness({}) == (True, {})
    assert readiness({"broker": lambda: True, "database": lambda: False}) == (
        False,
        {"broker": True, "database": False},
    )


async def test_the_server_answers_metrics_health_and_ready() -> None:
    registry = service_registry()
    Counter("probe_test_things", "things", registry=registry).inc(3)
    state = {"database": True}
    server = ProbeServer(registry, {"database": lambda: state["database"]}, service="routine")
    port = free_port()
    async with server.serving(port), httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        metrics = await http.get("/metrics")
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain")
        assert "probe_test_things_total 3.0" in metrics.text
        assert "process_resident_memory_bytes" in metrics.text
        health = await http.get("/health")
        assert (health.status_code, health.json()) == (
            200,
            {"status": "alive", "service": "routine"},
        )
        assert (await http.get("/ready")).json() == {"ready": True, "database": True}
        state["database"] = False
        answer = await http.get("/ready")
        assert (answer.status_code, answer.json()) == (503, {"ready": False, "database": False})
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{port}/health", timeout=2)
