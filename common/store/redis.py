"""Redis as an :class:`~common.store.ObjectStore`: one key per object, ``<prefix><id>``, holding
``last_seen`` as Unix epoch milliseconds in decimal, expiring at ``last_seen + OBJECT_TTL``.

The compare-and-set is a Lua script run by the server (:data:`MONOTONIC_SET`): atomic per key, so
two consumers writing the same id cannot move it back in time, and the expiry is absolute
(``PXAT``), so a late write of an old time never extends an object's life. One standalone server
gets the whole batch in one script call per :data:`KEYS_PER_CALL` keys; a cluster gets one call per
hash slot (a script's keys must share a slot), pipelined and grouped per node by redis-py's cluster
pipeline, which also follows MOVED and ASK while slots move.

The script is sent once (``SCRIPT LOAD``) and then called by its SHA (``EVALSHA``). A server that
does not know it (restarted, or a replica just promoted: the script cache is neither persisted nor
replicated) answers NOSCRIPT: the script is loaded again and the batch re-run, which is safe
because the write is idempotent.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.crc import key_slot
from redis.exceptions import (
    AuthenticationError,
    NoScriptError,
    RedisClusterException,
    RedisError,
)

from common.retrying import DependencyUnavailable, retry_connect
from common.store.settings import RedisSettings

log = structlog.get_logger(__name__)

# KEYS: the objects' keys; ARGV[1]: OBJECT_TTL in ms; ARGV[1 + i]: KEYS[i]'s last_seen in ms.
# Returns {keys written, keys overwritten because they held no integer}.
#
# One SET per key in the usual case (a new key, or a newer time): SET ... GET writes and hands back
# what was there, and only when that was a newer time is it put back, with its own expiry. Reading
# first (GET, then SET) costs two server calls per key, and the calls are the script's cost:
# bench/redis_store_bench.py. pcall: a key of another type (a hash...) answers SET ... GET with an
# error, which would abort the whole script; a plain SET replaces any type.
MONOTONIC_SET = """
local ttl = tonumber(ARGV[1])
local written, overwritten = 0, 0
for i, key in ipairs(KEYS) do
    local seen = ARGV[i + 1]
    local seen_ms = tonumber(seen)
    local previous = redis.pcall('SET', key, seen, 'PXAT', seen_ms + ttl, 'GET')
    if type(previous) == 'table' and previous.err then
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

Client = Redis | RedisCluster


class ReplicasBehind(RedisError):
    """``WAIT`` returned before ``REDIS_MIN_REPLICAS`` replicas had the batch: retried."""


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MILLISECOND = timedelta(milliseconds=1)


def epoch_ms(seen: datetime) -> int:
    # In integers: a float timestamp times 1000 can land a hair below the millisecond.
    return (seen - EPOCH) // MILLISECOND


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
        self._ttl_ms = round(ttl_seconds * 1000)
        self._min_replicas = min_replicas
        self._wait_timeout_ms = max(1, round(wait_timeout * 1000))
        self.overwritten = 0
        self._sha: str | None = None
        self._cluster = isinstance(client, RedisCluster)

    def key(self, object_id: int) -> str:
        return f"{self.prefix}{object_id}"

    async def write(self, latest: Mapping[int, datetime]) -> int:
        if not latest:
            return 0
        calls = self._calls(latest)
        if self._sha is None:
            self._sha = await self._load_script()
        try:
            return await self._run(self._sha, calls)
        except NoScriptError:
            log.info("redis_script_reloaded")
            self._sha = await self._load_script()
            return await self._run(self._sha, calls)

    def _calls(self, latest: Mapping[int, datetime]) -> list[tuple[list[str], list[int]]]:
        """(keys, their last_seen in ms) per script call."""
        if not self._cluster:
            items = [(self.key(i), epoch_ms(seen)) for i, seen in latest.items()]
            return [
                ([key for key, _ in chunk], [ms for _, ms in chunk])
                for chunk in (
                    items[start : start + KEYS_PER_CALL]
                    for start in range(0, len(items), KEYS_PER_CALL)
                )
            ]
        by_slot: dict[int, tuple[list[str], list[int]]] = defaultdict(lambda: ([], []))
        for object_id, seen in latest.items():
            key = self.key(object_id)
            keys, values = by_slot[key_slot(key.encode())]
            keys.append(key)
            values.append(epoch_ms(seen))
        return list(by_slot.values())

    async def _run(self, sha: str, calls: list[tuple[list[str], list[int]]]) -> int:
        pipe = self.client.pipeline(transaction=False)
        for keys, values in calls:
            pipe.evalsha(sha, len(keys), *keys, self._ttl_ms, *values)
        if self._min_replicas:
            # Same connection as the writes (one node, not transactional): WAIT covers them.
            pipe.execute_command("WAIT", self._min_replicas, self._wait_timeout_ms)
        results: list[Any] = await pipe.execute(raise_on_error=False)
        written = overwritten = 0
        for result in results[: len(calls)]:
            if isinstance(result, BaseException):
                raise result
            written += int(result[0])
            overwritten += int(result[1])
        if self._min_replicas:
            acknowledged = results[-1]
            if isinstance(acknowledged, BaseException):
                raise acknowledged
            if int(acknowledged) < self._min_replicas:
                raise ReplicasBehind(
                    f"{acknowledged} of {self._min_replicas} replicas acknowledged within "
                    f"{self._wait_timeout_ms} ms"
                )
        if overwritten:
            log.warning("redis_garbage_overwritten", keys=overwritten)
            self.overwritten += overwritten
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
