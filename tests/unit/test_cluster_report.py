"""RELIABILITY's "No single node" table is generated from a cluster run, never typed: its
rendering, and the document's markers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import report

pytestmark = pytest.mark.unit


def fault(name: str, **overrides: Any) -> dict[str, Any]:
    return {
        "name": name,
        "fault": "kill -9 of node 2",
        "fault_s": 0.1,
        "callbacks": 200,
        "answered_in_time": 200,
        "callbacks_per_s": 20.4,
        "slowest_ok_ms": 162.4,
        "ids_sent": 3000,
        "ids_per_s": 301.2,
        "online_ids_checked": 450,
        "lost": [],
        "offline_stored": [],
        "recovery_s": 4.0,
        "services_running": True,
        "elapsed_s": 9.0,
        "failures": [],
        "tracebacks": [],
        "notes": "",
        "passed": True,
        **overrides,
    }


RESULTS = {
    "finished_at": "2026-12-02T08:00:00+00:00",
    "elapsed_s": 140.0,
    "commit": "abc1234",
    "machine": {"nproc": 2, "cpu": "Some CPU", "python": "3.11.7", "load_average": [1, 2, 3]},
    "engines": "3 RabbitMQ nodes",
    "scenarios": [
        fault("work queue leader", notes="new leader: node 3"),
        fault(
            "PostgreSQL primary",
            lost=[4],
            recovery_s=None,
            answered_in_time=199,
            services_running=False,
            tracebacks=["consumer-1.log"],
            passed=False,
        ),
    ],
}


def test_each_fault_shows_answered_lost_and_recovery() -> None:
    block = report.render(RESULTS)
    assert block.startswith(report.BEGIN) and block.endswith(report.END)
    leader = next(line for line in block.splitlines() if line.startswith("| work queue leader"))
    assert "200/200 (100.0 %)" in leader
    assert "20.4 callbacks/s, 301 ids/s" in leader
    assert "(new leader: node 3)" in leader
    assert leader.endswith("| 4.0 | yes | pass |")
    failed = next(line for line in block.splitlines() if line.startswith("| PostgreSQL primary"))
    assert "199/200 (99.5 %)" in failed
    assert "not within the deadline" in failed and "| **no** |" in failed
    for why in ("1 callbacks not 2xx", "online ids lost", "within 15 s", "a service stopped"):
        assert why in failed
    assert "traceback in consumer" in failed
    assert "**Failed: PostgreSQL primary.**" in block


def test_a_slow_recovery_fails_even_with_nothing_lost() -> None:
    slow = fault("slow", recovery_s=16.0, passed=False)
    assert "backlog not gone within 15 s" in report._verdict(slow)


def test_the_document_carries_the_markers_and_only_the_block_changes(tmp_path: Path) -> None:
    document = report.DOC_PATH.read_text()
    assert report.BEGIN in document and report.END in document
    results = tmp_path / "results.json"
    results.write_text(json.dumps(RESULTS))
    doc = tmp_path / "RELIABILITY.md"
    doc.write_text(f"before\n{report.BEGIN}\nold\n{report.END}\nafter\n")
    assert report.main(["--results", str(results), "--doc", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("before\n") and text.endswith("\nafter\n") and "old" not in text
    assert report.main(["--results", str(results), "--doc", str(doc), "--check"]) == 0


def test_missing_markers_are_an_error() -> None:
    with pytest.raises(ValueError, match="markers"):
        report.replace_block("no markers here", "block")
