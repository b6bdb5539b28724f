"""Several nodes for one dependency: a RabbitMQ cluster in ``AMQP_URI``, a PostgreSQL primary and
its standbys in ``POSTGRES_HOST`` / ``POSTGRES_PORT``.

* ``AMQP_URI`` may be a comma-separated list of URIs of one cluster's nodes. They must share
  credentials and virtual host (a client that fails over must find the same queues and be let
  in), and each is parsed here, at start, so that a typo stops the service instead of surfacing
  as a failed reconnect an hour later. Each process shuffles the list so clients spread over the
  nodes, connects to the first that answers, and moves on to the next when it dies.
* ``POSTGRES_HOST`` / ``POSTGRES_PORT`` are lists as libpq's ``host`` and ``port`` are: one port
  for every host, or one port per host. asyncpg follows the host that accepts writes.

Pure parsing lives here; connecting is :func:`connect_any` and :class:`FailoverConnection`.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import unquote

import aio_pika
import aiormq
import aiormq.abc
import structlog
from aio_pika.abc import TimeoutType
from yarl import URL

from common.retrying import wait_until_set

log = structlog.get_logger(__name__)

T = TypeVar("T")

# A node refusing (down, starting, shutting down, or at the AMQP level): try the next one.
NODE_ERRORS = (OSError, ConnectionError, TimeoutError, aiormq.exceptions.AMQPError)

_SCHEME = re.compile(r"^amqps?://", re.IGNORECASE)


class NodeListError(ValueError):
    """A node list that cannot work; the message names the entry."""


def _where(number: int, count: int) -> str:
    return "the value" if count == 1 else f"entry {number} of {count}"


def mask(uri: str) -> str:
    """``uri`` with its password hidden, for messages and logs."""
    try:
        url = URL(uri)
    except ValueError:
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", uri)
    return str(url.with_password("***")) if url.password else uri


def _vhost(url: URL) -> str:
    # aiormq's rule: the path without its leading slash, and "/" when that is empty.
    return unquote(url.raw_path[1:]) or "/"


def parse_amqp_nodes(value: str) -> tuple[str, ...]:
    """The URIs of a comma-separated ``AMQP_URI``; :class:`NodeListError` names a bad entry."""
    entries = [entry.strip() for entry in value.split(",")]
    count = len(entries)
    first: URL | None = None
    for number, entry in enumerate(entries, 1):
        where = _where(number, count)
        if not entry:
            raise NodeListError(f"{where} is empty")
        if not _SCHEME.match(entry):
            raise NodeListError(f"{where} {mask(entry)!r} must start with amqp:// or amqps://")
        try:
            url = URL(entry)
            port = url.port
        except ValueError as error:
            raise NodeListError(f"{where} {mask(entry)!r} does not parse: {error}") from None
        if not url.host:
            raise NodeListError(f"{where} {mask(entry)!r} names no host")
        if port is not None and not 1 <= port <= 65535:
            raise NodeListError(f"{where} {mask(entry)!r} has port {port} out of 1-65535")
        if first is None:
            first = url
            continue
        if url.scheme.lower() != first.scheme.lower():
            raise NodeListError(
                f"{where} {mask(entry)!r} is {url.scheme}://, entry 1 is {first.scheme}://: "
                "every node of the list must use TLS, or none"
            )
        if _vhost(url) != _vhost(first):
            raise NodeListError(
                f"{where} {mask(entry)!r} names vhost {_vhost(url)!r}, entry 1 names "
                f"{_vhost(first)!r}: every node of the list must serve the same vhost"
            )
        if (url.user, url.password) != (first.user, first.password):
            raise NodeListError(
                f"{where} {mask(entry)!r} has other credentials than entry 1: "
                "every node of the list must take the same user and password"
            )
    return tuple(entries)


def parse_hosts(value: str) -> tuple[str, ...]:
    """The hosts of a comma-separated ``POSTGRES_HOST``."""
    entries = [entry.strip() for entry in value.split(",")]
    for number, entry in enumerate(entries, 1):
        if not entry:
            raise NodeListError(f"{_where(number, len(entries))} is empty")
        if any(character in entry for character in "/@?# "):
            raise NodeListError(
                f"{_where(number, len(entries))} {entry!r} is not a host name or address"
            )
    return tuple(entries)


def parse_ports(value: str, host_count: int) -> tuple[int, ...]:
    """The ports of a comma-separated ``POSTGRES_PORT``: one for every host, or one per host."""
    entries = [entry.strip() for entry in value.split(",")]
    ports = []
    for number, entry in enumerate(entries, 1):
        where = _where(number, len(entries))
        if not entry:
            raise NodeListError(f"{where} is empty")
        try:
            port = int(entry)
        except ValueError:
            raise NodeListError(f"{where} {entry!r} is not a port number") from None
        if not 1 <= port <= 65535:
            raise NodeListError(f"{where} {entry!r} is out of 1-65535")
        ports.append(port)
    if len(ports) not in (1, host_count):
        raise NodeListError(
            f"{len(ports)} ports for {host_count} hosts in POSTGRES_HOST: give one port for "
            "every host, or one port per host"
        )
    return tuple(ports)


def postgres_hostlist(hosts: Sequence[str], ports: Sequence[int]) -> str:
    """``host:port,host:port`` for a DSN; one port applies to every host."""
    if len(ports) == 1:
        ports = [ports[0]] * len(hosts)
    return ",".join(
        f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
        for host, port in zip(hosts, ports, strict=True)
    )


def shuffled(nodes: Sequence[T], rng: random.Random | None = None) -> list[T]:
    """A per-process order of ``nodes``, so that many clients spread over a cluster."""
    order = list(nodes)
    (rng or random.Random()).shuffle(order)  # noqa: S311 - load spreading, not security
    return order


async def connect_any(
    nodes: Sequence[str],
    connect: Callable[[str], Awaitable[T]],
    *,
    start: int = 0,
) -> tuple[int, T]:
    """Try ``nodes`` in turn from index ``start``; return the index that answered and its
    connection. When none answers, the last node's error propagates (the caller's backoff
    decides what next)."""
    last_error: BaseException | None = None
    for offset in range(len(nodes)):
        index = (start + offset) % len(nodes)
        try:
            connection = await connect(nodes[index])
        except NODE_ERRORS as error:
            last_error = error
        else:
            if len(nodes) > 1:
                log.info("node_connected", node=mask(nodes[index]))
            return index, connection
        if len(nodes) > 1:
            log.warning("node_unreachable", node=mask(nodes[index]), error=repr(last_error))
    if last_error is None:
        raise ValueError("no nodes to connect to")
    raise last_error


class FailoverConnection(aio_pika.RobustConnection):
    """An aio-pika robust connection that reconnects with the capped, jittered backoff of
    :mod:`common.backoff` and moves to the next node while it cannot reconnect.

    aio-pika's robust connection reconnects on its own, to ``url`` only (aio-pika issue #141, open
    since 2018), sleeping ``reconnect_interval`` seconds after each attempt. Both are public
    attributes it reads afresh for every attempt, which is enough to steer it: when the
    connection closes, move ``url`` to the next node before the first reconnect attempt, then,
    until it is connected again, wait the backoff (:func:`common.retrying.wait_until_set`),
    setting ``reconnect_interval`` to each wait so aio-pika sleeps the same, and move ``url`` on
    after each wait. The rounds are counted here, not aio-pika's attempts (its public API does
    not show them); an attempt that hangs until its connect timeout only lets the count run
    ahead, so aio-pika's waits grow at least as fast as the formula, never past ``max_backoff``.
    Channels, queues and consumers are restored by aio-pika as usual.

    Built complete (``FailoverConnection(URL(nodes[i]), nodes=nodes, node_index=i, ...)``, then
    ``connect()``: see :func:`common.amqp.connect_amqp`); it watches for drops once connected. The
    task that paces reconnects is this connection's own: :meth:`close` cancels and awaits it
    before closing the connection.
    """

    def __init__(
        self,
        url: URL,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        nodes: Sequence[str] = (),
        node_index: int = 0,
        initial_backoff: float,
        max_backoff: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(url, loop, reconnect_interval=initial_backoff, **kwargs)
        self.nodes = tuple(nodes) or (str(url),)
        self.node_index = node_index
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self._closing = False
        self._pacing: asyncio.Task[None] | None = None

    async def connect(self, timeout: TimeoutType = None) -> None:  # noqa: ASYNC109 - aio-pika's
        await super().connect(timeout)
        # Watched from the first success on (adding again on a reconnect is a no-op: a set): a
        # connection that never connected is dropped by its caller, and must leave nothing
        # running.
        self.close_callbacks.add(self._on_close)

    async def close(self, exc: aiormq.abc.ExceptionType | None = asyncio.CancelledError) -> None:
        self._closing = True  # from here on, a lost transport starts no pacing
        pacing, self._pacing = self._pacing, None
        if pacing is not None:
            pacing.cancel()
            await asyncio.wait([pacing])
        await super().close(exc)

    def advance(self) -> str:
        """Make the next node the one to connect to; return it."""
        self.node_index = (self.node_index + 1) % len(self.nodes)
        node = self.nodes[self.node_index]
        self.url = URL(node)
        return node

    def _on_close(self, *_: object) -> None:
        if self._closing or self.close_called:
            return
        if len(self.nodes) > 1:
            log.warning("broker_failover", next_node=mask(self.advance()))
        if self._pacing is None or self._pacing.done():
            self._pacing = self.loop.create_task(self._reconnect_with_backoff())

    async def _reconnect_with_backoff(self) -> None:
        # Looked at again after the wait: a drop while this task was ending found it running and
        # started no other; past this check nothing awaits, so no drop can slip in unseen.
        while not self.connected.is_set():
            await wait_until_set(
                self.connected,
                initial=self.initial_backoff,
                maximum=self.max_backoff,
                on_wait=self._before_wait,
            )
        self.reconnect_interval = self.initial_backoff
        log.info("broker_reconnected", node=mask(self.nodes[self.node_index]))

    def _before_wait(self, round_number: int, seconds: float) -> None:
        self.reconnect_interval = seconds
        # The first round's node was chosen when the connection closed.
        if round_number > 1 and len(self.nodes) > 1:
            log.info(
                "broker_failover", next_node=mask(self.advance()), retry_in_s=round(seconds, 2)
            )
