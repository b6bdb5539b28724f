"""Where the live view reads from: the services' ``/metrics``, RabbitMQ's management API and the
store (PostgreSQL's ``object`` table, or Redis's keys with ``STORE=redis``). Each read either
returns its figures or raises :class:`SourceDown` saying, in one line, whether the source did not
answer or refused the credentials."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import httpx
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError

from common.store.redis import RedisStore, redis_client
from common.store.settings import RedisSettings

Labels = tuple[tuple[str, str], ...]
Samples = dict[str, list[tuple[Labels, float]]]
"""Sample name (``x_total``, ``x_bucket``) → its labelled values."""


class SourceDown(Exception):
    """``state`` is ``unreachable`` or ``refused``; ``detail`` says why, for a human."""

    def __init__(self, state: str, detail: str) -> None:
        super().__init__(f"{state}: {detail}")
        self.state = state
        self.detail = detail


def parse_metrics(text: str) -> Samples:
    samples: Samples = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name].append((tuple(sorted(sample.labels.items())), sample.value))
    return dict(samples)


async def expand_hosts(url: str) -> list[str]:
    """``url`` once per address its host resolves to: compose's service name ``consumer``
    resolves to every replica. A host that does not resolve stays as it is (and will show as
    unreachable)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 80
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, family=socket.AF_INET
        )
    except OSError:
        return [url]
    addresses = sorted({str(info[4][0]) for info in infos})
    if len(addresses) <= 1:
        return [url]
    return [urlunsplit(parts._replace(netloc=f"{address}:{port}")) for address in addresses]


async def read_metrics(client: httpx.AsyncClient, base_url: str, name: str) -> Samples:
    url = base_url.rstrip("/") + "/metrics"
    try:
        answer = await client.get(url)
    except httpx.HTTPError as error:
        raise SourceDown("unreachable", f"{name} at {url}: {_describe(error)}") from None
    if answer.status_code in (401, 403):
        raise SourceDown("refused", f"{name} at {url} refused access ({answer.status_code})")
    if answer.status_code != 200:
        raise SourceDown("unreachable", f"{name} at {url} answered {answer.status_code}")
    try:
        return parse_metrics(answer.text)
    except ValueError as error:
        raise SourceDown("unreachable", f"{name} at {url}: not Prometheus text ({error})") from None


@dataclass(frozen=True)
class Broker:
    """RabbitMQ's management API and the account to ask it with."""

    api_url: str
    user: str
    password: str
    vhost: str

    @classmethod
    def from_amqp_uri(cls, amqp_uri: str, api_url: str | None = None) -> Broker:
        first = amqp_uri.split(",")[0].strip()
        parts = urlsplit(first)
        vhost = parts.path[1:] if len(parts.path) > 1 else "/"
        host = parts.hostname or "localhost"
        return cls(
            api_url=(api_url or f"http://{host}:15672").rstrip("/"),
            user=parts.username or "guest",
            password=parts.password or "guest",
            vhost=vhost,
        )


@dataclass(frozen=True)
class QueueDepths:
    """Messages per queue; None while the broker has no figure yet (a new queue's statistics
    arrive a few seconds after it is declared) or the queue does not exist."""

    work: int | None
    retry: int | None
    dead: int | None


async def read_queues(client: httpx.AsyncClient, broker: Broker, queue_name: str) -> QueueDepths:
    url = f"{broker.api_url}/api/queues/{quote(broker.vhost, safe='')}"
    try:
        answer = await client.get(
            url, params={"columns": "name,messages"}, auth=(broker.user, broker.password)
        )
    except httpx.HTTPError as error:
        raise SourceDown(
            "unreachable", f"rabbitmq management API at {url}: {_describe(error)}"
        ) from None
    if answer.status_code == 401:
        raise SourceDown(
            "refused",
            f"rabbitmq management API refused the credentials of user {broker.user!r} (AMQP_URI)",
        )
    if answer.status_code != 200:
        raise SourceDown("unreachable", f"rabbitmq management API answered {answer.status_code}")
    depths: dict[str, int | None] = {}
    for queue in answer.json():
        messages = queue.get("messages")
        depths[str(queue.get("name", ""))] = None if messages is None else int(messages)
    retries = [depth for name, depth in depths.items() if name.startswith(f"{queue_name}.retry.")]
    return QueueDepths(
        work=depths.get(queue_name),
        retry=None if not retries or None in retries else sum(d for d in retries if d is not None),
        dead=depths.get(f"{queue_name}.dead"),
    )


@dataclass(frozen=True)
class Database:
    """How to reach PostgreSQL: a URL (every host of a list, asyncpg's multi-host form), asyncpg's
    ``ssl=`` (``None``: as the URL says) and the user, for the line that says who was refused."""

    dsn: str = field(repr=False)
    ssl: ssl.SSLContext | str | None
    user: str


@dataclass(frozen=True)
class Table:
    """What the store holds: objects stored, and the oldest ``last_seen`` where the store can
    tell cheaply (PostgreSQL; Redis keys expire by themselves, so ``None`` there)."""

    rows: int
    oldest_last_seen: datetime | None
    oldest_age: float | None


async def read_table(database: Database) -> Table:
    user = database.user
    try:
        connection = await asyncpg.connect(database.dsn, ssl=database.ssl, timeout=2)
    except (
        asyncpg.InvalidPasswordError,
        asyncpg.InvalidAuthorizationSpecificationError,
    ) as error:
        raise SourceDown(
            "refused", f"postgresql refused the credentials of user {user!r}: {error}"
        ) from None
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        raise SourceDown("unreachable", f"postgresql: {_describe(error)}") from None
    try:
        row = await connection.fetchrow(
            "SELECT count(*) AS rows, min(last_seen) AS oldest, "
            "extract(epoch FROM now() - min(last_seen))::float8 AS age FROM object"
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        raise SourceDown("unreachable", f"postgresql: {_describe(error)}") from None
    finally:
        await connection.close(timeout=1)
    assert row is not None  # noqa: S101 - an aggregate without GROUP BY returns one row
    return Table(int(row["rows"]), row["oldest"], row["age"])


async def read_redis(settings: RedisSettings) -> Table:
    """The keys under ``REDIS_KEY_PREFIX``, by :meth:`RedisStore.count` (SCAN, every primary of a
    cluster): O(keys), bounded by the view's per-source deadline like every other read."""
    client = redis_client(settings)
    # One try: the view asks again next second, and redis-py's default retries (a refused
    # password is a ConnectionError to it) would outlast the per-source deadline.
    client.set_retry(Retry(NoBackoff(), 0))
    store = RedisStore(client, prefix=settings.redis_key_prefix, ttl_seconds=settings.object_ttl)
    try:
        rows = await store.count()
    except AuthenticationError as error:
        raise SourceDown(
            "refused", f"redis refused the credentials in REDIS_URL: {_describe(error)}"
        ) from None
    except RedisStore.errors as error:
        raise SourceDown("unreachable", f"redis: {_describe(error)}") from None
    finally:
        await store.close()
    return Table(rows, None, None)


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
