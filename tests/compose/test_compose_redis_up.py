"""`docker compose -f docker-compose.yml -f docker-compose.redis.yml up`, for real: Redis as the
store, no PostgreSQL and no routine, on the engine and base images of the other compose tests.

One project of the module's own, brought up once; the tests run in file order against it (the
tester's fast pace of tests/compose/fast-tester.yml, keys kept 5 s by redis-short-ttl.yml), the
last one takes it down with `down -v`. Redis is read with redis-cli inside its container.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.compose import (
    COMPOSE_FILE,
    FAST_OVERRIDE,
    HOST_PORT_VARIABLES,
    Engine,
    Project,
    Stopwatch,
    health_summary,
)
from tests.support.ports import free_port
from tests.support.processes import PROJECT_ROOT
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.compose, pytest.mark.timeout(600)]

REDIS_FILE = PROJECT_ROOT / "docker-compose.redis.yml"
SHORT_TTL = PROJECT_ROOT / "tests" / "compose" / "redis-short-ttl.yml"
TTL_MS = 5_000  # redis-short-ttl.yml
SERVICES = {"rabbitmq", "redis", "producer", "consumer", "tester"}
UP_WITHIN_S = 180


class Up:
    def __init__(self, project: Project, seconds: float) -> None:
        self.project = project
        self.seconds = seconds

    def redis_cli(self, *args: str) -> list[str]:
        [redis] = self.project.containers("redis")
        output = self.project.engine.docker("exec", redis["Id"], "redis-cli", *args)
        return output.splitlines()

    def keys(self) -> dict[int, tuple[int, int]]:
        """``{id: (value, PEXPIRETIME)}`` of every ``object:<id>`` key, read in one script (Redis
        does not expire keys while a script runs: the three reads agree)."""
        script = (
            "local out = {} "
            "for _, key in ipairs(redis.call('KEYS', 'object:*')) do "
            "local value = redis.call('GET', key) "
            "if value then "
            "table.insert(out, key .. ' ' .. value .. ' ' .. redis.call('PEXPIRETIME', key)) "
            "end end "
            "return table.concat(out, ' ')"
        )
        words = " ".join(self.redis_cli("EVAL", script, "0")).split()
        return {
            int(key.removeprefix("object:")): (int(value), int(expires))
            for key, value, expires in zip(words[0::3], words[1::3], words[2::3], strict=True)
        }


@pytest.fixture(scope="module")
def up(engine: Engine, base_images: dict[str, str]) -> Iterator[Up]:
    assert "redis:7" in base_images, base_images
    variables = (*HOST_PORT_VARIABLES, "REDIS_HOST_PORT")
    project = Project(
        engine=engine,
        name=f"lastseen-redis-{uuid.uuid4().hex[:8]}",
        ports={variable: free_port() for variable in variables},
        files=(COMPOSE_FILE, REDIS_FILE, FAST_OVERRIDE, SHORT_TTL),
    )
    watch = Stopwatch()
    try:
        wait = ("--wait", "--wait-timeout", str(UP_WITHIN_S))
        project.compose("up", "-d", "--build", *wait, timeout=UP_WITHIN_S + 300)
        yield Up(project, watch.elapsed)
    finally:
        project.down()


def call_tester(project: Project, method: str, path: str, **kwargs: Any) -> Any:
    answer = httpx.request(method, project.url("TESTER_HOST_PORT", path), timeout=10, **kwargs)
    answer.raise_for_status()
    return answer.json()


def test_redis_runs_with_aof_and_no_postgres_or_routine_exists(up: Up) -> None:
    health = health_summary(up.project)
    assert health and set(health.values()) == {"healthy"}, health
    services = {
        c["Config"]["Labels"]["com.docker.compose.service"] for c in up.project.containers()
    }
    assert services == SERVICES, "db and routine must not even be created"
    assert len(up.project.containers("consumer")) == 2
    assert up.seconds < UP_WITHIN_S, f"up --build --wait took {up.seconds:.0f}s"
    aof = dict(zip(*[iter(up.redis_cli("CONFIG", "GET", "append*"))] * 2, strict=True))
    assert (aof["appendonly"], aof["appendfsync"]) == ("yes", "everysec"), aof
    for consumer in up.project.containers("consumer"):
        env = dict(item.split("=", 1) for item in consumer["Config"]["Env"])
        assert env["STORE"] == "redis" and env["REDIS_URL"] == "redis://redis:6379/0"
    [redis] = up.project.containers("redis")
    assert redis["HostConfig"]["ReadonlyRootfs"] is True
    for binding in redis["HostConfig"]["PortBindings"]["6379/tcp"]:
        assert binding["HostIp"] == "127.0.0.1", binding


def test_callbacks_become_object_keys_expiring_ttl_after_last_seen(up: Up) -> None:
    keys = wait_until(up.keys, timeout=60, interval=0.5, what="object:<id> keys in Redis")
    now_ms = time.time() * 1000
    for object_id, (last_seen_ms, expires_ms) in keys.items():
        assert object_id % 2 == 0, f"offline id {object_id} stored"
        assert now_ms - 60_000 < last_seen_ms < now_ms + 5_000, (object_id, last_seen_ms)
        assert expires_ms == last_seen_ms + TTL_MS, (object_id, last_seen_ms, expires_ms)
    ready = httpx.get(up.project.url("PRODUCER_HOST_PORT", "/ready"), timeout=10)
    assert ready.status_code == 200 and ready.json()["ready"] is True


def test_keys_expire_by_themselves_once_callbacks_stop(up: Up) -> None:
    assert up.keys(), "no keys to watch expire"
    call_tester(up.project, "POST", "/control", json={"paused": True})
    # No routine runs: Redis alone removes them, a TTL after the last callbacks were stored.
    wait_until(lambda: not up.keys(), timeout=TTL_MS / 1000 + 30, interval=0.5, what="no keys")
    stats = dict(line.split(":", 1) for line in up.redis_cli("INFO", "stats") if ":" in line)
    assert int(stats["expired_keys"]) > 0


def test_down_v_leaves_nothing(up: Up) -> None:
    up.project.compose("down", "-v", "--timeout", "30", timeout=120)
    assert up.project.leftovers() == {"containers": [], "volumes": [], "networks": []}
