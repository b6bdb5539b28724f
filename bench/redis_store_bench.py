"""Redis store throughput: how many ids/s one redis-server core stores through the consumer's
batched writes (``RedisStore.write``: the monotonic script by EVALSHA, pipelined), and the
server's CPU per stored id.

A redis-server of its own (free port, temporary folder, AOF everysec as docs/redis.md suggests);
``--writers`` concurrent writers each send batches of ``--batch`` new ids back to back for
``--seconds``. The figure of interest is ids stored per second of *server* CPU: the issue's floor
is 100,000 per core.

    python -m bench.redis_store_bench [--seconds 10] [--batch 500] [--writers 4] [--no-aof]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import redis.asyncio

from bench.measure import cpu_seconds, own_cpu_seconds
from common.store.redis import RedisStore
from tests.support.redis_server import RedisServer


async def measure(seconds: float, batch: int, writers: int, aof: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="lastseen-redis-bench-") as folder:
        config = {} if aof else {"appendonly": "no"}
        server = RedisServer(Path(folder) / "redis", config=config).start()
        try:
            pid = server.pid
            store = RedisStore(
                redis.asyncio.Redis(host="127.0.0.1", port=server.port),
                prefix="object:",
                ttl_seconds=3600,
            )
            next_id = 0
            stored = 0

            async def writer(deadline: float) -> None:
                nonlocal next_id, stored
                while time.monotonic() < deadline:
                    start, next_id = next_id, next_id + batch
                    now = datetime.now(UTC)
                    stored += await store.write(dict.fromkeys(range(start, start + batch), now))

            server_cpu, client_cpu, began = cpu_seconds(pid), own_cpu_seconds(), time.monotonic()
            deadline = began + seconds
            await asyncio.gather(*(writer(deadline) for _ in range(writers)))
            elapsed = time.monotonic() - began
            server_cpu = cpu_seconds(pid) - server_cpu
            client_cpu = own_cpu_seconds() - client_cpu
            await store.close()
        finally:
            server.remove()
    return {
        "ids_per_s": stored / elapsed,
        "server_cpu_share": server_cpu / elapsed,
        "ids_per_server_cpu_s": stored / server_cpu if server_cpu else float("nan"),
        "server_us_per_id": server_cpu / stored * 1e6,
        "client_us_per_id": client_cpu / stored * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.redis_store_bench")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--no-aof", action="store_true", help="appendonly no (memory only)")
    args = parser.parse_args()
    figures = asyncio.run(measure(args.seconds, args.batch, args.writers, not args.no_aof))
    for name, value in figures.items():
        print(f"{name:>22}: {value:,.2f}")


if __name__ == "__main__":
    main()
