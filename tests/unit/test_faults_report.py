"""RELIABILITY's "Partial faults" table is generated from a faults run, never typed: its
rendering, and the document's markers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.faults import report

pytestmark = pytest.mark.unit


def scenario(name: str, **overrides: Any) -> dict[str, Any]:
    return {
        "name": name,
        "fault": "consumers ↔ status API: 200 ms ± 50 ms",
        "fault_s": 15.0,
        "callbacks": 150,
        "answered_in_time": 150,
        "refused_fast": 0,
        "slowest_ok_ms": 21.7,
        "callbacks_per_s": 10.0,
        "ids_per_s": 522.3,
        "online_ids_checked": 500,
        "lost": [],
        "offline_stored": [],
        "recovery_s": 4.8,
        "services_running": True,
        "failures": [],
        "tracebacks": [],
        "notes": "39.8 in flight of 40",
        "passed": True,
        **overrides,
    }


RESULTS = {
    "finished_at": "2026-12-06T08:00:00+00:00",
    "elapsed_s": 90.0,
    "commit": "abc1234",
    "machine": {"nproc": 2, "cpu": "Some CPU", "python": "3.11.7", "load_average": [1, 2, 3]},
    "engines": "private RabbitMQ node",
    "scenarios": [
        scenario("slow lossy status link"),
        scenario("spool disk full", answered_in_time=120, refused_fast=30, notes=""),
        scenario(
            "broken",
            answered_in_time=149,
            failures=[{"status": 500}],
            lost=[4],
            recovery_s=None,
            services_running=False,
            tracebacks=["producer-1.log"],
            passed=False,
        ),
    ],
}


def test_each_scenario_shows_its_answers_refusals_losses_and_recovery() -> None:
    block = report.render(RESULTS)
    assert block.startswith(report.BEGIN) and block.endswith(report.END)
    lines = block.splitlines()
    slow = next(line for line in lines if line.startswith("| slow lossy status link"))
    assert "| 150/150 (100.0 %) | — |" in slow
    assert "10.0 callbacks/s, 522 ids/s" in slow
    assert slow.endswith("| 4.8 | yes | 39.8 in flight of 40 | pass |")
    full = next(line for line in lines if line.startswith("| spool disk full"))
    # the fast 503s promised nothing: the share counts the callbacks that could be answered
    assert "| 120/120 (100.0 %) | 30 |" in full
    broken = next(line for line in lines if line.startswith("| broken"))
    assert "not within the deadline" in broken and "| **no** |" in broken
    for why in ("nor a fast 503", "online ids lost", "within 30 s", "a service stopped"):
        assert why in broken
    assert "traceback in producer" in broken
    assert "**Failed: broken.**" in block


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
