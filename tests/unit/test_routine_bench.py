"""The routine benchmark's pure parts: reading the routine's log as it grows, and the support of
its tails counted per writer (bench/routine_bench.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.routine_bench import Pair, RoutineFigures, RoutineLog, RoutineRun, Window

pytestmark = pytest.mark.unit


def test_the_log_is_read_line_by_line_as_it_is_appended(tmp_path: Path) -> None:
    path = tmp_path / "routine.log"
    path.write_bytes(b'{"event": "routine_started"}\nnot json\n{"event": "expiry_t')
    log = RoutineLog(path)
    assert log.read() == [{"event": "routine_started"}]  # the half-written line waits
    with path.open("ab") as appending:
        appending.write(b'ick", "deleted": 3000}\n')
    assert log.read() == [{"event": "expiry_tick", "deleted": 3000}]
    assert log.read() == []


def window(flushes: int) -> Window:
    return Window(during=False, start=0.0, end=1.0, commits=[0.001] * flushes)


def test_the_tails_are_supported_by_the_flushes_per_writer_of_the_shortest_window() -> None:
    figures = RoutineFigures(RoutineRun(writers=12))
    figures.pairs = [Pair(window(4800), window(4500)), Pair(window(5000), window(4900))]
    assert figures.fewest_per_writer == 375


def test_the_verdict_is_on_the_commit_ratio_of_every_pair() -> None:
    figures = RoutineFigures(RoutineRun(writers=1))
    for during in (0.0015, 0.0025):  # 1.5x and 2.5x the 1 ms without
        slow = Window(during=True, start=0.0, end=1.0, commits=[during] * 400)
        figures.pairs.append(Pair(window(400), slow, q=0.95))
    assert [round(p.ratio, 2) for p in figures.pairs] == [1.5, 2.5]
    assert str(figures.verdict) == "at the line"
