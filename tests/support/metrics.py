"""Reading a service's ``/metrics`` in a test: one value, summed over the series that match."""

from __future__ import annotations

import httpx

from liveview.sources import Samples, parse_metrics


def scrape(base_url: str) -> Samples:
    answer = httpx.get(f"{base_url.rstrip('/')}/metrics", timeout=5)
    answer.raise_for_status()
    return parse_metrics(answer.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples carrying ``labels`` (0 when there is none)."""
    wanted = set(labels.items())
    return sum(v for found, v in samples.get(name, []) if wanted <= set(found))


def total(urls: list[str], name: str, **labels: str) -> float:
    """``name`` summed over several processes (e.g. every consumer)."""
    return sum(value(scrape(url), name, **labels) for url in urls)
