"""``python -m tester``: wiring only."""

from __future__ import annotations

import sys

import structlog
import uvloop

from common.log import configure_logging
from common.settings import load_settings
from tester.service import serve
from tester.settings import TesterSettings


def main() -> int:
    settings = load_settings(TesterSettings, "tester")
    configure_logging("tester", settings.log_level, settings.log_format)
    log = structlog.get_logger()
    try:
        uvloop.run(serve(settings))
    except OSError as error:
        # The only OSError that reaches here is binding the port (in use, no such address).
        log.error(
            "cannot listen", host=settings.tester_host, port=settings.tester_port, error=str(error)
        )
        return 1
    log.info("tester stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
