"""The broker's memory and alarms, read with ``rabbitmqctl status`` (no management plugin here).

Each call starts an Erlang VM (about 0.5 s of CPU), so benchmarks sample it every 15 s at most.
``BENCH_RABBITMQ_NODE`` names the node when the benchmark runs against one of its own
(``BENCH_AMQP_URI`` then points at it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess


def broker_status() -> dict[str, object]:
    """Alarms, the memory high watermark (setting and bytes) and the broker's RSS, or an error."""
    rabbitmqctl = shutil.which("rabbitmqctl")
    if rabbitmqctl is None:
        return {"error": "rabbitmqctl not found"}
    node = os.environ.get("BENCH_RABBITMQ_NODE")
    result = subprocess.run(
        [rabbitmqctl, *(["-n", node] if node else []), "-q", "status", "--formatter", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        return {"error": (result.stderr or result.stdout).strip()[-200:]}
    status = json.loads(result.stdout)
    memory = status.get("memory", {})
    total = memory.get("total", {}) if isinstance(memory, dict) else {}
    return {
        "version": status.get("rabbitmq_version"),
        "alarms": status.get("alarms", []),
        "watermark": status.get("vm_memory_high_watermark_setting"),
        "limit_bytes": status.get("vm_memory_high_watermark_limit"),
        "rss_bytes": total.get("rss") if isinstance(total, dict) else None,
        "disk_free_limit": status.get("disk_free_limit"),
    }
