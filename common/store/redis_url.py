"""``REDIS_URL``: ``redis://[user:password@]host:port/db``, ``rediss://`` for TLS, or a comma list
of a cluster's seed nodes (``redis://user:pw@h1:7000,h2:7000``: the first entry's scheme and
credentials, the others may name just ``host:port``).

Pure parsing, so a typo stops the service at start with the entry named and the password hidden.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from common.secrets import mask_uri

DEFAULT_PORT = 6379


class RedisUrlError(ValueError):
    """A ``REDIS_URL`` that cannot work; the message names the entry (password hidden)."""


@dataclass(frozen=True)
class RedisTarget:
    nodes: tuple[tuple[str, int], ...]
    username: str | None
    password: str | None
    db: int
    tls: bool

    @property
    def several(self) -> bool:
        return len(self.nodes) > 1


def _where(number: int, count: int) -> str:
    return "the value" if count == 1 else f"entry {number} of {count}"


def parse_redis_url(value: str) -> RedisTarget:
    """The nodes, credentials, database and TLS of ``value``; :class:`RedisUrlError` if bad."""
    entries = [entry.strip() for entry in value.split(",")]
    count = len(entries)
    first = entries[0]
    scheme = first.split("://", 1)[0].lower() if "://" in first else ""
    if scheme not in ("redis", "rediss"):
        raise RedisUrlError(
            f"{_where(1, count)} {mask_uri(first)!r} must start with redis:// or rediss://"
        )
    nodes: list[tuple[str, int]] = []
    username = password = None
    db = 0
    for number, entry in enumerate(entries, 1):
        where = _where(number, count)
        if not entry:
            raise RedisUrlError(f"{where} is empty")
        text = entry if "://" in entry else f"{scheme}://{entry}"
        shown = mask_uri(text)
        try:
            parts = urlsplit(text)
            port = DEFAULT_PORT if parts.port is None else parts.port
        except ValueError as error:
            raise RedisUrlError(f"{where} {shown!r} does not parse: {error}") from None
        if not 1 <= port <= 65535:
            raise RedisUrlError(f"{where} {shown!r} has port {port} out of 1-65535")
        if parts.scheme.lower() != scheme:
            raise RedisUrlError(f"{where} {shown!r}: every entry must use {scheme}://")
        if not parts.hostname:
            raise RedisUrlError(f"{where} {shown!r} names no host")
        if parts.query or parts.fragment:
            raise RedisUrlError(f"{where} {shown!r}: no query or fragment is read")
        path = parts.path.strip("/")
        if number == 1:
            username = unquote(parts.username) if parts.username else None
            password = unquote(parts.password) if parts.password is not None else None
            if path and not (path.isdigit() and int(path) <= 15):
                raise RedisUrlError(f"{where} {shown!r}: the database must be a number 0-15")
            db = int(path or 0)
        elif path or parts.username or parts.password:
            raise RedisUrlError(
                f"{where} {shown!r}: credentials and database come from the first entry only"
            )
        nodes.append((parts.hostname, port))
    if count > 1 and db != 0:
        raise RedisUrlError("Redis Cluster has database 0 only: drop the /db of the first entry")
    return RedisTarget(tuple(nodes), username, password, db, scheme == "rediss")
