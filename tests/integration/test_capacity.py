"""``python -m bench.capacity --smoke``: every measurement of the capacity plan runs end to end
against the real broker and database, in seconds, and renders the plan."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.services import Endpoints

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_the_smoke_run_measures_every_part_and_writes_the_plan(
    endpoints: Endpoints, tmp_path: Path
) -> None:
    if endpoints.source != "local":
        pytest.skip("the capacity bench reads broker and database CPU from /proc: local only")
    target = tmp_path / "SCALING.md"
    env = {
        **os.environ,
        "BENCH_AMQP_URI": endpoints.amqp_uri,
        "BENCH_DATABASE_URL": endpoints.database_url,
    }
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "bench.capacity", "--smoke", "--write", str(target)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert elapsed < 40, f"the smoke run took {elapsed:.1f} s; CI wants seconds"
    text = target.read_text()
    assert "profile **smoke**" in text
    assert "python -m bench.capacity --smoke" in text
    for heading in ("## Measured here", "## Assumptions (not measured)", "## The plan"):
        assert heading in text
    assert "| | 10 k ids/s | 100 k ids/s | 1 M ids/s |" in text
    # Every measured headline figure is a positive number.
    for label in (
        r"\*\*([\d.]+) ms CPU per id\*\*",
        r"\*\*([\d,]+) rows per core-second\*\*",
        r"\*\*([\d,]+) messages per core-second\*\*",
        r"\*\*([\d,]+) callbacks per core-second\*\*",
    ):
        match = re.search(label, text)
        assert match, label
        assert float(match.group(1).replace(",", "")) > 0
    assert "0 % spooled" in text, "the producer figure must be for broker-confirmed callbacks"
    # The run cleaned up after itself: no bench database left behind.
    leftovers = subprocess.run(
        [sys.executable, "-c", _LIST_DATABASES, endpoints.database_url],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.split()
    assert not [name for name in leftovers if name.startswith("bench_capacity_")]


_LIST_DATABASES = """
import asyncio, sys, asyncpg
async def main():
    connection = await asyncpg.connect(sys.argv[1])
    rows = await connection.fetch("SELECT datname FROM pg_database")
    await connection.close()
    print(" ".join(row["datname"] for row in rows))
asyncio.run(main())
"""
