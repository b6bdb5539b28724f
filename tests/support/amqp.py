"""AMQP URIs for tests."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from tests.support.proxy import TcpProxy


def amqp_uri_via(uri: str, proxy: TcpProxy) -> str:
    """The same URI, through a proxy the test can cut."""
    parts = urlsplit(uri)
    auth = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(netloc=f"{auth}127.0.0.1:{proxy.port}"))
