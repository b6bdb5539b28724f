"""Prometheus metrics: each service builds its own registry at start and passes it down.

The producer serves ``/metrics`` on its HTTP port; services without one (consumer, routine)
serve it on ``METRICS_PORT`` when that is set.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, start_http_server


# Off unless METRICS_PORT is set; in a container the scraper comes from another address.
def serve_metrics(registry: CollectorRegistry, port: int, host: str = "0.0.0.0") -> None:  # noqa: S104 - scraped from another container
    """Serve ``registry`` at ``http://host:port/metrics`` from a daemon thread (0: don't)."""
    if port:
        start_http_server(port, addr=host, registry=registry)
