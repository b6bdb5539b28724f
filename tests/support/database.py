"""The run's PostgreSQL: its identity, admin statements, and service settings from a URL."""

from __future__ import annotations

import asyncio
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit, urlunsplit

import asyncpg

RUN_ID = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"


def admin(url: str, statement: str) -> None:
    """Run one admin statement on its own thread and loop, so sync and async tests can call it."""

    async def execute() -> None:
        connection = await asyncpg.connect(url)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, execute()).result(timeout=60)


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def postgres_env(url: str) -> dict[str, str]:
    """``POSTGRES_*`` variables for a service, from a URL."""
    parts = urlsplit(url)
    return {
        "POSTGRES_HOST": parts.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(parts.port or 5432),
        "POSTGRES_DB": parts.path.lstrip("/"),
        "POSTGRES_USER": parts.username or "postgres",
        "POSTGRES_PASSWORD": parts.password or "",
    }
