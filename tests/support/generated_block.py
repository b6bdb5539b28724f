"""A generated block in a document (docs/RELIABILITY.md): the text between two markers, rendered
from a run's results JSON, and the command line that writes, prints or checks it."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class GeneratedBlock:
    prog: str
    description: str | None
    begin: str
    end: str
    doc: Path
    results: Path
    command: str
    """How to produce the results file, for the error when it is missing."""
    what: str
    """What the results hold, e.g. "scenarios", "faults" (the tests first: "chaos", "cluster")."""
    tests: str
    render: Callable[[dict[str, Any]], str]

    def replace(self, document: str, block: str) -> str:
        """``document`` with the text from the begin marker to the end marker replaced."""
        start = document.find(self.begin)
        end = document.find(self.end)
        if start < 0 or end < start:
            raise ValueError(f"the document lacks the markers {self.begin!r} … {self.end!r}")
        return document[:start] + block + document[end + len(self.end) :]

    def main(self, argv: list[str] | None = None) -> int:
        parser = argparse.ArgumentParser(prog=self.prog, description=self.description)
        parser.add_argument("--results", type=Path, default=self.results)
        parser.add_argument("--doc", type=Path, default=self.doc)
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--stdout", action="store_true", help="print the table, change nothing")
        mode.add_argument("--check", action="store_true", help="exit 1 if the document is stale")
        args = parser.parse_args(argv)
        try:
            results = json.loads(args.results.read_text())
        except FileNotFoundError:
            parser.error(
                f"{args.results} not found: run the {self.tests} tests first ({self.command})"
            )
        block = self.render(results)
        if args.stdout:
            sys.stdout.write(block + "\n")
            return 0
        document = args.doc.read_text()
        updated = self.replace(document, block)
        if args.check:
            if updated != document:
                sys.stderr.write(f"{args.doc} does not show {args.results}\n")
                return 1
            return 0
        args.doc.write_text(updated)
        count = len(results["scenarios"])
        sys.stderr.write(f"{args.doc}: {count} {self.what} from {args.results}\n")
        return 0


def results_table(
    begin: str,
    end: str,
    summary: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[str]],
    command: str,
) -> str:
    """A generated block of a fault run: markers, its summary line, the table, the command."""
    lines = [
        begin,
        "",
        summary,
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
        f"Produced by `{command}`.",
        "",
        end,
    ]
    return "\n".join(lines)
