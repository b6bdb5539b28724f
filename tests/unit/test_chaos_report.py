"""The RELIABILITY table is generated from a chaos run, never typed: its rendering, and the
document's markers."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest

from tests.chaos import conftest as chaos_conftest
from tests.chaos import report

pytestmark = pytest.mark.unit


def scenario(name: str, **overrides: Any) -> dict[str, Any]:
    return {
        "name": name,
        "fault": "a fault",
        "fault_s": 30.0,
        "callbacks": 300,
        "answered_in_time": 290,
        "refused_while_down": 10,
        "slowest_ok_ms": 312.4,
        "ids_sent": 15_000,
        "online_ids_checked": 500,
        "lost": [],
        "offline_stored": [],
        "recovery_s": 4.25,
        "elapsed_s": 40.0,
        "failures": [],
        "tracebacks": [],
        "notes": "",
        "passed": True,
        **overrides,
    }


RESULTS = {
    "started_at": "2026-11-29T09:00:00+00:00",
    "finished_at": "2026-11-29T09:03:00+00:00",
    "elapsed_s": 180.0,
    "commit": "abc1234",
    "machine": {"nproc": 2, "cpu": "Some CPU", "python": "3.11.7", "load_average": [1, 2, 3]},
    "broker": "private RabbitMQ node",
    "settings": {},
    "scenarios": [
        scenario("kill -9 producer"),
        scenario("broker connection cut", lost=[4, 8], recovery_s=None, passed=False),
    ],
}


def test_render_shows_every_scenario_with_its_figures() -> None:
    block = report.render(RESULTS)
    assert block.startswith(report.BEGIN) and block.endswith(report.END)
    rows = [line for line in block.splitlines() if line.startswith("| kill") or "cut |" in line]
    assert len(rows) == 2
    assert "| 290/290 (100.0 %) | 312 | 10 |" in rows[0]
    assert "| 4.2 | pass |" in rows[0] or "| 4.3 | pass |" in rows[0]
    assert "| 2 | 0 | not within the deadline | **FAIL**: online ids lost; backlog not" in rows[1]
    assert "Failed: broker connection cut" in block
    assert "commit `abc1234`" in block and "2 cores" in block
    assert report.COMMAND in block


def test_the_block_replaces_only_what_is_between_the_markers(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    results = tmp_path / "results.json"
    results.write_text(json.dumps(RESULTS))
    doc.write_text(f"# Title\n\nbefore\n\n{report.BEGIN}\nold table\n{report.END}\n\nafter\n")
    assert report.main(["--results", str(results), "--doc", str(doc), "--check"]) == 1
    assert report.main(["--results", str(results), "--doc", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("# Title\n\nbefore\n\n") and text.endswith("\n\nafter\n")
    assert "old table" not in text and "kill -9 producer" in text
    assert report.main(["--results", str(results), "--doc", str(doc), "--check"]) == 0


def test_a_document_without_markers_is_refused() -> None:
    with pytest.raises(ValueError, match="markers"):
        report.replace_block("no markers here", report.render(RESULTS))


def scenario_names(source: str) -> list[str]:
    """The row name of every scenario ``test_scenarios.py`` runs: the first argument of each
    test's ``chaos.begin(...)``, once per suite the test runs on (a mark of ``conftest.py``, or
    an indirect parametrization of ``chaos_suite``; RabbitMQ and PostgreSQL otherwise), named as
    :meth:`tests.chaos.harness.ChaosSuite.named` names it."""
    marks = {
        name: mark.args[1]
        for name, mark in vars(chaos_conftest).items()
        if isinstance(mark, pytest.MarkDecorator) and mark.args[:1] == ("chaos_suite",)
    }
    labels = {"rabbitmq-postgres": None, "rabbitmq-redis": "Redis", "pubsub-postgres": "Pub/Sub"}
    names = []
    for node in ast.parse(source).body:
        if not isinstance(node, ast.AsyncFunctionDef) or not node.name.startswith("test_"):
            continue
        suites = ["rabbitmq-postgres"]
        for decorator in node.decorator_list:
            if isinstance(decorator, ast.Name) and decorator.id in marks:
                suites = marks[decorator.id]
            elif isinstance(decorator, ast.Call) and "'chaos_suite'" in ast.unparse(decorator):
                suites = ast.literal_eval(decorator.args[1])
        begin = next(
            call
            for call in ast.walk(node)
            if isinstance(call, ast.Call) and ast.unparse(call.func) == "chaos.begin"
        )
        template = begin.args[0]
        for suite in suites:
            noun = "Redis" if suite.endswith("redis") else "database"
            if isinstance(template, ast.JoinedStr):
                name = "".join(
                    noun if isinstance(part, ast.FormattedValue) else str(ast.literal_eval(part))
                    for part in template.values
                )
            else:
                name = ast.literal_eval(template)
            label = labels[suite]
            if label is not None and label not in name:
                name += f" ({label})"
            names.append(name)
    return names


def test_reliability_doc_holds_a_generated_table_of_every_scenario() -> None:
    text = report.DOC_PATH.read_text()
    start, end = text.index(report.BEGIN), text.index(report.END)
    table = text[start:end]
    scenarios = scenario_names((Path(report.__file__).parent / "test_scenarios.py").read_text())
    rows = [line for line in table.splitlines() if line.startswith("| ")][1:]
    in_doc = [row.split(" | ")[0].removeprefix("| ") for row in rows]
    assert sorted(in_doc) == sorted(scenarios), (
        "the doc's table does not show one row per scenario: rerun the chaos tests and the report"
    )
    assert report.COMMAND in text
