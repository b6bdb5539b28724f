"""``python -m common.healthcheck``: the container image's HEALTHCHECK.

With ``HEALTHCHECK_URL`` set (the producer's and tester's ``/health``), healthy means that URL
answers 2xx within 3 s. Otherwise healthy means the service's event loop touched its heartbeat file
within the last 30 s. Exit code 0 = healthy, 1 = not.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

from common.heartbeat import is_fresh


def healthy() -> bool:
    url = os.environ.get("HEALTHCHECK_URL")
    if not url:
        return is_fresh()
    try:
        # The image's own HEALTHCHECK_URL (http://127.0.0.1:…), set in compose, not user input.
        with urllib.request.urlopen(url, timeout=3) as answer:  # noqa: S310 - HEALTHCHECK_URL set by compose
            return 200 <= int(answer.status) < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


if __name__ == "__main__":
    sys.exit(0 if healthy() else 1)
