"""Redis as an :class:`~common.store.ObjectStore`: one key per object, ``<prefix><id>``, holding
``last_seen`` as Unix epoch milliseconds in decimal, expiring at ``last_seen + OBJECT_TTL``.

The compare-and-set is a Lua script run by the server (:data:`MONOTONIC_SET`): atomic per key, so
two consumers writing the same id cannot move it back in time, and the expiry is absolute
(``PXAT``), so a late write of an old time never extends an object's life. One standalone server
gets the whole batch in one script call per :data:`KEYS_PER_CALL` keys. A cluster gets one call per
*node* likewise, sent to the node the client's slot map names: the script is flagged
``allow-cross-slot-keys`` (Redis 7) and takes those keys as arguments, so they need only live on
that node, not in one hash slot — with keys spread over 16,384 slots, a call per slot was a call
per key, twice the server's CPU and several times the client's (``python -m
bench.redis_store_bench --cluster``). A node that no longer serves one of the keys (a slot moved,
is migrating, or its master failed over) stops the call at that key with a cluster error, the keys
before it written and counted: the rest are sent again one call per slot, declared, through
redis-py's cluster pipeline, which follows MOVED and ASK while slots move (each write is atomic
per key and idempotent).

The script is sent once (``SCRIPT LOAD``) and then called by its SHA (``EVALSHA``). A server that
does not know it (restarted, or a replica just promoted: the script cache is neither persisted nor
replicated) answers NOSCRIPT: the script is loaded again and the batch re-run, which is safe
because the write is idempotent.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    AuthenticationError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)

from common.retrying import DependencyUnavailable, retry_connect
from common.store.settings import RedisSettings

log = structlog.get_logger(__name__)

# Two layouts of the same call. Per slot: KEYS the objects' keys (declared, so the server checks
# they are its own and redirects otherwise), ARGV[1] OBJECT_TTL in ms, ARGV[2] the keys' last_seen
# in ms, :data:`MS_DIGITS` decimal digits each, zero-padded, one after the other. Per node (a
# cluster): no KEYS, ARGV[1] the TTL, ARGV[2] the times likewise, then the n keys: a call's
# declared keys must share one slot, while keys it touches need only be the node's own under the
# allow-cross-slot-keys flag. The times travel as one argument rather than one each: each argument
# costs the client's encoder (redis-py packs argument by argument in Python) about as much as the
# rest of the id's write (bench/redis_store_bench.py --against-postgres).
# Returns {keys written, keys overwritten because they held no integer}; or, when a SET fails for
# another reason than the key's type (a key this node does not serve: a slot moved or migrating, a
# failover), {written, overwritten, keys done before it, the error}: the keys before it are written
# and counted, the others are sent again per slot (or the batch retried).
#
# One SET per key in the usual case (a new key, or a newer time): SET ... GET writes and hands back
# what was there, and only when that was a newer time is it put back, with its own expiry. Reading
# first (GET, then SET) costs two server calls per key, and the calls are the script's cost:
# bench/redis_store_bench.py. pcall: a key of another type (a hash...) answers SET ... GET with a
# WRONGTYPE error, which would abort the whole script; a plain SET replaces any type.
MONOTONIC_SET = """#!lua flags=allow-cross-slot-keys
local ttl = tonumber(ARGV[1])
local times = ARGV[2]
local n = #KEYS
local declared = n > 0
if not declared then
    n = #ARGV - 2
end
local written, overwritten = 0, 0
for i = 1, n do
    local key = declared and KEYS[i] or ARGV[2 + i]
    local seen = string.sub(times, (i - 1) * 13 + 1, i * 13)
    if string.byte(seen, 1) == 48 then
        seen = string.match(seen, '^0*(%d.*)$')
    end
    local seen_ms = tonumber(seen)
    local previous = redis.pcall('SET', key, seen, 'PXAT', seen_ms + ttl, 'GET')
    if type(previous) == 'table' and previous.err then
        if not string.find(previous.err, 'WRONGTYPE', 1, true) then
            return {written, overwritten, i - 1, previous.err}
        end
        redis.call('SET', key, seen, 'PXAT', seen_ms + ttl)
        overwritten = overwritten + 1
        written = written + 1
    elseif not previous then
        written = written + 1
    elseif not string.match(previous, '^%d+$') then
        overwritten = overwritten + 1
        written = written + 1
    elseif tonumber(previous) >= seen_ms then
        redis.call('SET', key, previous, 'PXAT', tonumber(previous) + ttl)
    else
        written = written + 1
    end
end
return {written, overwritten}
"""

# One script call runs alone on the server: 1,000 keys keep it near a millisecond.
KEYS_PER_CALL = 1000
# Digits of one last_seen in the script's times argument (the script's 13): epoch milliseconds
# have 13 digits from 2001 to 2286.
MS_DIGITS = 13
MAX_MS = 10**MS_DIGITS - 1

Client = Redis | RedisCluster
# keys, their last_seen (:data:`MS_DIGITS` digits), the target node (None: routed by slot)
Call = tuple[list[bytes], list[bytes], ClusterNode | None]

# A per-node call the node refused (its keys are not all its own now): those keys are sent again
# one call per slot.
REROUTE = (MovedError, AskError, TryAgainError, ClusterDownError, RedisClusterException)
# What a script's own access to a key the node cannot serve answers (Redis 7's
# scriptVerifyClusterState), and a refusal of cross-slot keys.
CLUSTER_REFUSALS = ("non local key", "cluster is down", "CROSSSLOT", "same slot")


class ReplicasBehind(RedisError):
    """``WAIT`` returned before ``REDIS_MIN_REPLICAS`` replicas had the batch: retried."""


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MILLISECOND = timedelta(milliseconds=1)


def epoch_ms(seen: datetime) -> int:
    """Milliseconds since the epoch, floored, of an aware datetime."""
    return epochs_ms((seen,))[0]


def epochs_ms(times: Iterable[datetime]) -> list[int]:
    """:func:`epoch_ms` of each of ``times``. Rounded to the microsecond first: a float timestamp
    times 1000 can land a hair below the millisecond, but it is within 0.4 µs of the exact
    microsecond until 2106 (a double's spacing there is 0.24 µs), so the rounding is exact, at
    half the CPU of timedelta arithmetic, on the consumer's path for every id stored."""
    times = list(times)
    if any(seen.tzinfo is None for seen in times):
        raise ValueError("a naive datetime has no place on the epoch")
    return [round(seen.timestamp() * 1_000_000) // 1000 for seen in times]


class RedisStore:
    name = "redis"
    # RedisError covers connection loss, timeouts, READONLY (a demoted primary), LOADING, cluster
    # errors and refused auth; RedisClusterException: no node of a cluster reachable. Each keeps
    # the batch and retries it.
    errors: tuple[type[BaseException], ...] = (
        RedisError,
        RedisClusterException,
        OSError,
        TimeoutError,
    )

    def __init__(
        self,
        client: Client,
        *,
        prefix: str,
        ttl_seconds: float,
        min_replicas: int = 0,
        wait_timeout: float = 1.0,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self._prefix = prefix.encode()
        self._ttl_ms = round(ttl_seconds * 1000)
        self._min_replicas = min_replicas
        self._wait_timeout_ms = max(1, round(wait_timeout * 1000))
        self.overwritten = 0
        self.rerouted = 0  # per-node calls sent again per slot (a cluster's slot map was stale)
        self._sha: str | None = None
        self._cluster = isinstance(client, RedisCluster)

    def key(self, object_id: int) -> str:
        return f"{self.prefix}{object_id}"

    async def write(self, latest: Mapping[int, datetime]) -> int:
        if not latest:
            return 0
        if isinstance(self.client, RedisCluster):
            await self.client.initialize()  # the slot map, once (a no-op afterwards)
        calls = self._calls(latest)
        if self._sha is None:
            self._sha = await self._load_script()
        try:
            return await self._run(self._sha, calls)
        except NoScriptError:
            log.info("redis_script_reloaded")
            self._sha = await self._load_script()
            return await self._run(self._sha, calls)

    def _calls(self, latest: Mapping[int, datetime]) -> list[Call]:
        """The script calls of a batch: on one server, chunks of :data:`KEYS_PER_CALL`; on a
        cluster, the same per node that serves the keys' slots (as the client knows them)."""
        # Bytes built here, not by the client's encoder: half the client's CPU per id
        # (bench/redis_store_bench.py, client CPU per id).
        prefix = self._prefix
        times = epochs_ms(latest.values())
        if min(times) < 0 or max(times) > MAX_MS:
            raise ValueError("a time outside what the store holds (1970-2286)")
        items = [(prefix + b"%d" % i, b"%013d" % t) for i, t in zip(latest, times, strict=True)]
        if not self._cluster:
            return _chunks(items, None)
        assert isinstance(self.client, RedisCluster)  # noqa: S101 - narrows the type
        by_node: dict[str, tuple[ClusterNode, list[tuple[bytes, bytes]]]] = {}
        unknown: list[tuple[bytes, bytes]] = []
        nodes = self.client.nodes_manager
        for key, ms in items:
            try:
                node = nodes.get_node_from_slot(key_slot(key))
            except RedisClusterException:  # no master known for the slot now (a failover)
                unknown.append((key, ms))
                continue
            by_node.setdefault(node.name, (node, []))[1].append((key, ms))
        calls = [call for node, part in by_node.values() for call in _chunks(part, node)]
        if unknown:
            calls += self._per_slot(_chunks(unknown, None))
        return calls

    def _per_slot(self, calls: list[Call]) -> list[Call]:
        """``calls``' keys one call per hash slot, routed by the client (MOVED, ASK followed)."""
        by_slot: dict[int, tuple[list[bytes], list[bytes], None]] = defaultdict(
            lambda: ([], [], None)
        )
        for keys, values, _ in calls:
            for key, ms in zip(keys, values, strict=True):
                slot_keys, slot_values, _ = by_slot[key_slot(key)]
                slot_keys.append(key)
                slot_values.append(ms)
        return list(by_slot.values())

    async def _run(self, sha: str, calls: list[Call]) -> int:
        pipe = self.client.pipeline(transaction=False)
        for keys, values, node in calls:
            times = b"".join(values)
            if node is None:
                pipe.evalsha(sha, len(keys), *keys, self._ttl_ms, times)
            else:
                pipe.execute_command(
                    "EVALSHA", sha, 0, self._ttl_ms, times, *keys, target_nodes=node
                )
        if self._min_replicas:
            # Same connection as the writes (one node, not transactional): WAIT covers them.
            pipe.execute_command("WAIT", self._min_replicas, self._wait_timeout_ms)
        results: list[Any] = await pipe.execute(raise_on_error=False)
        written = overwritten = 0
        refused: list[Call] = []
        failure: BaseException | None = None
        for call, result in zip(calls, results[: len(calls)], strict=True):
            keys, values, node = call
            if node is not None and _refused_by_node(result):
                refused.append(call)  # refused whole, before anything ran
                continue
            if isinstance(result, BaseException):
                failure = failure or result
                continue
            written += int(result[0])
            overwritten += int(result[1])
            if len(result) > 2:  # stopped at a key: the ones before it are written and counted
                done, error = int(result[2]), ResponseError(_text(result[3]))
                if node is not None and _refused_by_node(error):
                    refused.append((keys[done:], values[done:], node))
                else:
                    failure = failure or error
        if overwritten:
            # Counted before any retry: a retried key holds a time by then, not the garbage.
            log.warning("redis_garbage_overwritten", keys=overwritten)
            self.overwritten += overwritten
        if failure is not None:
            raise failure
        if refused:
            log.info("redis_calls_rerouted", calls=len(refused))
            self.rerouted += len(refused)
            written += await self._run(sha, self._per_slot(refused))
        if self._min_replicas:
            acknowledged = results[-1]
            if isinstance(acknowledged, BaseException):
                raise acknowledged
            if int(acknowledged) < self._min_replicas:
                raise ReplicasBehind(
                    f"{acknowledged} of {self._min_replicas} replicas acknowledged within "
                    f"{self._wait_timeout_ms} ms"
                )
        return written

    async def _load_script(self) -> str:
        # On a cluster redis-py sends SCRIPT LOAD to every primary.
        sha: str = await self.client.script_load(MONOTONIC_SET)
        return sha

    async def ping(self) -> None:
        # A write, not PING: a demoted primary, a full memory or a failed disk answers PING but
        # refuses writes, and readiness is about writing. The key sits outside the objects' prefix.
        await self.client.set("lastseen:ready-probe", "1", px=10_000)

    async def count(self) -> int:
        """Keys under the prefix, by SCAN (every primary on a cluster): O(keys), for tests and
        the live view, not for a hot path."""
        total = 0
        async for _ in self.client.scan_iter(match=f"{self.prefix}*", count=1000):
            total += 1
        return total

    async def read(self, object_id: int) -> datetime | None:
        value = await self.client.get(self.key(object_id))
        if value is None:
            return None
        return EPOCH + int(value) * MILLISECOND

    async def close(self) -> None:
        await self.client.aclose()


def _chunks(items: list[tuple[bytes, bytes]], node: ClusterNode | None) -> list[Call]:
    return [
        ([key for key, _ in chunk], [ms for _, ms in chunk], node)
        for chunk in (
            items[start : start + KEYS_PER_CALL] for start in range(0, len(items), KEYS_PER_CALL)
        )
    ]


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _refused_by_node(result: object) -> bool:
    """A per-node call stopped at a key the node does not serve now (the script's cluster error:
    a slot moved or migrating, a failover), or refused by the client or the cluster: its keys are
    sent again per slot."""
    if isinstance(result, REROUTE):
        return True
    return isinstance(result, ResponseError) and any(
        text in str(result) for text in CLUSTER_REFUSALS
    )


def redis_client(settings: RedisSettings) -> Client:
    """A client for ``REDIS_URL`` (not connected yet)."""
    target = settings.redis_target
    options: dict[str, Any] = {
        "username": target.username,
        "password": target.password,
        "socket_timeout": 10.0,
        "socket_connect_timeout": 5.0,
        "health_check_interval": 15,
    }
    if target.tls:
        options.update(
            ssl=True,
            ssl_ca_certs=_path(settings.redis_tls_ca),
            ssl_certfile=_path(settings.redis_tls_cert),
            ssl_keyfile=_path(settings.redis_tls_key),
        )
    if settings.redis_is_cluster:
        nodes = [ClusterNode(host, port) for host, port in target.nodes]
        return RedisCluster(startup_nodes=nodes, **options)
    host, port = target.nodes[0]
    return Redis(host=host, port=port, db=target.db, **options)


def _path(path: object) -> str | None:
    return None if path is None else str(path)


async def open_redis_store(settings: RedisSettings) -> RedisStore:
    """Connect (retrying until ``STARTUP_TIMEOUT``), check a write goes through, load the script.

    A refused password is not retried: it exits 1 with one line naming the setting.
    """
    store = RedisStore(
        redis_client(settings),
        prefix=settings.redis_key_prefix,
        ttl_seconds=settings.object_ttl,
        min_replicas=settings.redis_min_replicas,
        wait_timeout=settings.redis_wait_timeout,
    )

    async def attempt() -> None:
        try:
            await store.ping()
        except AuthenticationError as error:
            raise DependencyUnavailable(
                f"redis refused the connection: {error} (check the user and password in REDIS_URL)"
            ) from error

    try:
        await retry_connect(
            "redis", attempt, deadline=settings.startup_timeout, retry_on=RedisStore.errors
        )
    except BaseException:
        await store.close()
        raise
    return store
