"""``python -m liveview`` with ``STORE=redis``: it counts the objects in Redis (the keys under
``REDIS_KEY_PREFIX``, by ``RedisStore.count``), reads no ``POSTGRES_*`` setting, and shows a Redis
that does not answer, or refuses the password, as its own source's one line. The servers are the
tests' own (never the machine's 6379)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis.asyncio

from common.store.redis import RedisStore
from tests.support.ports import free_port
from tests.support.processes import run_module
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.integration

NOWHERE = "http://127.0.0.1:9"  # discard port: the other sources do not answer


async def _store_objects(url: str, count: int) -> None:
    store = RedisStore(redis.asyncio.Redis.from_url(url), prefix="object:", ttl_seconds=3600)
    try:
        await store.write(dict.fromkeys(range(count), datetime.now(UTC)))
        await store.client.set("someone-else:1", "x")  # outside the prefix: not an object
    finally:
        await store.close()


def liveview(workdir: Path, redis_url: str) -> dict[str, object]:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / ".env").write_text(
        "AMQP_URI=amqp://lastseen:placeholder@127.0.0.1:5672/\n"
        "QUEUE_NAME=lastseen_liveview\n"
        "STORE=redis\n"
        f"REDIS_URL={redis_url}\n"
    )
    done = run_module(
        "liveview",
        {},
        workdir,
        "--once",
        "--json",
        "--producer",
        NOWHERE,
        "--consumer",
        NOWHERE,
        "--rabbitmq",
        NOWHERE,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    snapshot: dict[str, object] = json.loads(done.stdout)
    return snapshot


def test_the_live_view_counts_the_objects_in_redis(redis_url: str, tmp_path: Path) -> None:
    asyncio.run(_store_objects(redis_url, 3))
    snapshot = liveview(tmp_path, redis_url)
    sources = snapshot["sources"]
    assert isinstance(sources, dict)
    assert sources["redis"] == "ok" and "postgresql" not in sources
    assert snapshot["rows"] == 3
    assert snapshot["oldest_last_seen"] is None  # keys expire by themselves: not tracked


def test_a_redis_that_does_not_answer_is_one_line(tmp_path: Path) -> None:
    snapshot = liveview(tmp_path, f"redis://127.0.0.1:{free_port()}/0")
    sources = snapshot["sources"]
    assert isinstance(sources, dict)
    assert str(sources["redis"]).startswith("unreachable: redis")
    assert snapshot["rows"] == "unreachable"


def test_a_refused_password_is_shown_as_refused(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", config={"requirepass": "right"}).start()
    try:
        snapshot = liveview(tmp_path / "view", f"redis://:wrong@127.0.0.1:{server.port}/0")
    finally:
        server.remove()
    sources = snapshot["sources"]
    assert isinstance(sources, dict)
    assert str(sources["redis"]).startswith("refused: redis refused the credentials in REDIS_URL")
    assert snapshot["rows"] == "refused"
