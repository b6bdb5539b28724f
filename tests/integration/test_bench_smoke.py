"""``python -m bench --smoke``: the benchmark command runs end to end, so it cannot rot.

Seconds long, against the test broker and database: every section runs (producer acceptance,
fan-out, pipeline overhead with the consumer's profile, the routine, overload, the consumer with
STORE=redis against STORE=postgres and the Redis server's CPU per id, the consumer with
BROKER=pubsub against Google's emulator beside BROKER=rabbitmq), and the report and
its plots land in the directory given with ``--output``. The figures are not checked: a smoke run
on a shared machine proves nothing about speed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import PROJECT_ROOT
from tests.support.services import Endpoints

pytestmark = pytest.mark.integration

SECTIONS = (
    "## Targets",
    "## 1. Acceptance",
    "## 2. Fan-out",
    "## 3. Pipeline overhead",
    "## 4. CPU per id",
    "## Where the consumer's time goes",
    "## 5. The routine at scale",
    "## 6. Overload",
    "## 7. Redis as the store",
    "## 8. Pub/Sub as the broker",
)
NONE = "\N{EN DASH}"  # the report's cell for a figure not measured
PLOTS = ("acceptance", "fanout", "pipeline_overhead", "routine", "overload")


@pytest.mark.timeout(190)
def test_bench_smoke_writes_the_report_and_plots(endpoints: Endpoints, tmp_path: Path) -> None:
    output = tmp_path / "report"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TEST_", "PYTEST_"))},
        "PYTHONPATH": str(PROJECT_ROOT),
        "BENCH_AMQP_URI": endpoints.amqp_uri,
        "BENCH_DATABASE_URL": endpoints.database_url,
    }
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--output", str(output)],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = (output / "BENCHMARKS.md").read_text()
    for heading in SECTIONS:
        assert heading in report, f"{heading!r} missing from the report"
    assert "python -m bench --smoke --output" in report  # the exact command
    # Issue 25: every target row gives its statistic, sample count and repeats; one smoke run
    # is no verdict, whatever its figures.
    header = "| target | goal | statistic | median (range, repeats) | verdict |"
    assert header in report
    rows = report.split(header, 1)[1].split("\n\n", 1)[0].strip().splitlines()[1:]
    assert len(rows) == 10, rows
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        # One round, one pair, one Redis run each in the smoke plan.
        one_run = (
            "producer",
            "commit latency",
            "ack delay",
            "consumer CPU per id at 600 ids/s, STORE",
            "… the part of it that differs",
            "Redis",
        )
        if cells[0].startswith(one_run):
            assert cells[3].endswith("(one run)") or cells[3] == NONE, row
            assert cells[4] in ("**one run: no verdict**", "**not measured**"), row
        elif not cells[0].startswith("overload"):  # the pipeline window's three parts
            assert cells[3].endswith("3 runs)") or cells[3] == NONE, row
    # Issue 21: informational only (the emulator is not the service): said, and no target row.
    assert "the emulator is not the service" in report
    assert "the emulator is not the service" in " ".join(result.stderr.split())
    for name in PLOTS:
        plot = output / "benchmarks" / f"{name}.png"
        assert plot.read_bytes().startswith(b"\x89PNG"), f"{plot} is not a PNG"
        assert f"(benchmarks/{name}.png)" in report, f"{name}.png not linked"
    # Both stores ran: the Redis rows carry the consumer's and the redis-server's CPU.
    redis_section = report.split("## 7. Redis as the store", 1)[1]
    assert "| 1 | postgres |" in redis_section
    assert "| 1 | redis |" in redis_section
    assert "the same writes through `PostgresStore`" in redis_section
    assert "MEMORY USAGE object:<id>" in redis_section


def test_bench_refuses_an_unknown_section() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "fanout,nonsense"],
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "unknown section(s) nonsense;" in result.stderr
