"""What the chaos and cluster runs share: reading a service's log past an offset, the ledger's
send times, and the results JSON (its envelope: command, times, commit, machine), written
atomically for the report writers (tests/*/report.py)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.support.processes import PROJECT_ROOT


def read_from(path: Path, offset: int) -> str:
    with path.open("rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


def sent_at(record: Mapping[str, Any]) -> datetime:
    return datetime.fromisoformat(record["sent_at"])


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model or platform.processor(),
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def commit() -> str:
    try:
        found = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except OSError:
        return ""
    return found.stdout.strip()


def write_results(
    path: Path, *, command: str, started_at: datetime, finished_at: datetime, **rest: Any
) -> None:
    """The run's results JSON: the envelope, then ``rest`` (engines, settings, scenarios)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "command": command,
        "started_at": started_at.isoformat(timespec="seconds"),
        "finished_at": finished_at.isoformat(timespec="seconds"),
        "elapsed_s": round((finished_at - started_at).total_seconds(), 1),
        "commit": commit(),
        "machine": machine(),
        **rest,
    }
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(document, indent=2, default=str) + "\n")
    temporary.replace(path)
