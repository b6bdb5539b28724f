"""The tester as seen by tests: what a strict consumer accepts, and the tester as a process."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tests.support.processes import ServiceProcess, Spawn


def is_valid_answer(body: bytes, object_id: int) -> bool:
    """What a strict consumer accepts: exactly {"id": <that id>, "online": <bool>}."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return False
    return (
        isinstance(parsed, dict)
        and parsed.keys() == {"id", "online"}
        and type(parsed["id"]) is int
        and parsed["id"] == object_id
        and type(parsed["online"]) is bool
    )


def start_tester(spawn: Spawn, env: Mapping[str, str]) -> tuple[ServiceProcess, str]:
    """Start ``python -m tester`` on a free port; return it and its base URL."""
    process = spawn(
        "tester",
        {"TESTER_HOST": "127.0.0.1", "TESTER_PORT": "0", "TESTER_SEED": "1", **env},
    )
    process.wait_for_log('"tester_listening"', timeout=30)
    return process, f"http://127.0.0.1:{log_events(process, 'tester_listening')[0]['port']}"


def log_events(process: ServiceProcess, event: str) -> list[dict[str, Any]]:
    found = []
    for line in process.output().splitlines():
        if line.startswith("{") and f'"{event}"' in line:
            entry = json.loads(line)
            if entry.get("event") == event:
                found.append(entry)
    return found
