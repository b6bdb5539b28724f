"""Prometheus metrics: each service builds its own registry at start and passes it down.

The producer serves ``/metrics`` on its HTTP port; services without one (consumer, routine)
serve it on ``METRICS_PORT`` when that is set.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, start_http_server


def serve_metrics(
    registry: CollectorRegistry, port: int, host: str = "0.0.0.0"
) -> Callable[[], None]:
    """Serve ``registry`` at ``http://host:port/metrics`` from a daemon thread (0: don't).
    Returns what stops serving (for a service run in-process, e.g. by a test)."""
    if not port:
        return lambda: None
    server, thread = start_http_server(port, addr=host, registry=registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join()

    return stop
