"""The baseline for bench/producer_bench.py: a bare FastAPI endpoint that only parses the body.

Served exactly like the producer (uvicorn, uvloop, httptools, no access log), so the difference
between the two is the producer's own work: validation, de-duplication, encoding, confirmed
publishing.

    python -m bench.producer_bare_app PORT
"""

from __future__ import annotations

import sys

import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response

from producer.api import NO_TELEMETRY

# Configured like the producer's app (see producer/api.py), so the comparison isolates the
# producer's own work.
app = FastAPI(telemetry=NO_TELEMETRY)


@app.post("/callback", status_code=202)
async def callback(request: Request) -> Response:
    ids = orjson.loads(await request.body())["object_ids"]
    return Response(
        orjson.dumps({"accepted": len(ids)}), status_code=202, media_type="application/json"
    )


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )
