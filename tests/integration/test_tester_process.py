"""``python -m tester`` as a real process: callbacks to a local receiver, the ledger, the 1 s client
timeout, SIGTERM, and configuration errors."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from tests.support.processes import Spawn, run_module
from tests.support.tester import log_events, start_tester
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration


@dataclass
class Receiver:
    """A stand-in producer: records every POST /callback and answers as told."""

    url: str = ""
    bodies: list[bytes] = field(default_factory=list)
    content_types: list[str] = field(default_factory=list)
    answer: Callable[[int], int | None] = lambda seq: 200  # None: never answer

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.read())
        self.content_types.append(request.headers.get("Content-Type", ""))
        status = self.answer(len(self.bodies))
        if status is None:
            await asyncio.Event().wait()  # cancelled when the tester gives up and disconnects
        return web.json_response({"accepted": True}, status=status or 200)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/callback", found.handle)
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    found.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield found
    await runner.cleanup()


async def get_json(url: str) -> Any:
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(url)
        response.raise_for_status()
        return response.json()


async def test_callbacks_have_the_original_shape_and_the_ledger_matches_what_arrived(
    spawn: Spawn, receiver: Receiver
) -> None:
    receiver.answer = lambda seq: 503 if seq % 4 == 0 else 200
    tester, url = start_tester(
        spawn,
        {
            "CALLBACK_ENDPOINT": receiver.url,
            "TESTER_INTERVAL": "50ms",
            "TESTER_CALLBACKS": "12",
            "TESTER_ID_RANGE": "10",
            "TESTER_MAX_IDS": "30",
        },
    )
    await asyncio.to_thread(tester.wait_for_log, '"callbacks_finished"', timeout=20)

    bodies = [json.loads(body) for body in receiver.bodies]
    assert len(bodies) == 12, "TESTER_CALLBACKS stops the loop"
    assert set(receiver.content_types) == {"application/json"}
    assert all(body.keys() == {"object_ids"} for body in bodies)
    sent = [body["object_ids"] for body in bodies]
    assert all(len(ids) <= 30 for ids in sent)
    assert all(type(i) is int and 0 <= i < 10 for ids in sent for i in ids)
    assert len({len(ids) for ids in sent}) > 3, "counts are drawn"

    ledger = await get_json(url + "/ledger")
    assert (ledger["total"], ledger["dropped"]) == (12, 0)
    records = ledger["records"]
    assert [record["seq"] for record in records] == list(range(1, 13))
    assert [record["object_ids"] for record in records] == sent
    assert [record["status"] for record in records] == [
        503 if n % 4 == 0 else 200 for n in range(1, 13)
    ]
    assert [record["ok"] for record in records] == [n % 4 != 0 for n in range(1, 13)]
    assert all(record["error"] is None and record["latency_ms"] < 1000 for record in records)
    sent_at = [datetime.fromisoformat(record["sent_at"]) for record in records]
    # Fixed-rate ticks: one late send may be followed by a shorter gap, never by a faster pace.
    span = (sent_at[-1] - sent_at[0]).total_seconds()
    assert span >= 10 * 0.05, "one callback per TESTER_INTERVAL (the first may be late)"

    stats = await get_json(url + "/stats")
    assert stats["callbacks"] == {"sent": 12, "ok": 9, "failed": 3}
    after = await get_json(url + "/ledger?after=10")
    assert [record["seq"] for record in after["records"]] == [11, 12]
    assert tester.running(), "the status API keeps serving after the last callback"


async def test_a_receiver_that_never_answers_times_out_after_1s_and_the_loop_goes_on(
    spawn: Spawn, receiver: Receiver
) -> None:
    receiver.answer = lambda seq: None if seq <= 2 else 200
    tester, url = start_tester(
        spawn,
        {"CALLBACK_ENDPOINT": receiver.url, "TESTER_INTERVAL": "100ms", "TESTER_CALLBACKS": "3"},
    )

    async def three_records() -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = (await get_json(url + "/ledger"))["records"]
        return records if len(records) == 3 else []

    first, second, third = await eventually(three_records, timeout=15, what="3 callbacks")
    for hung in (first, second):
        assert hung["status"] is None
        assert hung["ok"] is False
        assert "timeout" in hung["error"]
        assert 950 <= hung["latency_ms"] < 1600
    assert (third["status"], third["ok"]) == (200, True)
    assert len(receiver.bodies) == 3
    failures = log_events(tester, "callback_failed")
    assert [entry["seq"] for entry in failures] == [1, 2]
    assert all(entry["level"] == "warning" and "timeout" in entry["error"] for entry in failures)
    assert tester.running()


async def test_an_unreachable_receiver_is_logged_and_recorded(
    spawn: Spawn, unused_tcp_port: int
) -> None:
    tester, url = start_tester(
        spawn,
        {
            "CALLBACK_ENDPOINT": f"http://127.0.0.1:{unused_tcp_port}",
            "TESTER_INTERVAL": "50ms",
            "TESTER_CALLBACKS": "3",
        },
    )
    await asyncio.to_thread(tester.wait_for_log, '"callbacks_finished"', timeout=20)
    records = (await get_json(url + "/ledger"))["records"]
    assert len(records) == 3
    assert all(record["status"] is None and "ConnectError" in record["error"] for record in records)
    assert (await get_json(url + "/stats"))["callbacks"]["failed"] == 3


async def test_pause_and_resume_the_callback_loop(spawn: Spawn, receiver: Receiver) -> None:
    _, url = start_tester(spawn, {"CALLBACK_ENDPOINT": receiver.url, "TESTER_INTERVAL": "50ms"})
    async with httpx.AsyncClient(timeout=5) as client:

        async def some_arrived() -> bool:
            return len(receiver.bodies) >= 2

        await eventually(some_arrived, timeout=10)
        paused = await client.post(url + "/control", json={"paused": True})
        paused_at = datetime.now(UTC)
        assert paused.json()["paused"] is True
        await asyncio.sleep(0.5)  # the stimulus: ten intervals with the loop paused
        resumed_at = datetime.now(UTC)
        await client.post(url + "/control", json={"paused": False})
        while_paused = len(receiver.bodies)

        async def resumed() -> bool:
            return len(receiver.bodies) >= while_paused + 2

        await eventually(resumed, timeout=10)
    ledger = await get_json(url + "/ledger")
    records = ledger["records"]
    assert [record["seq"] for record in records] == list(range(1, ledger["total"] + 1))
    sent_at = [datetime.fromisoformat(record["sent_at"]) for record in records]
    assert not [moment for moment in sent_at if paused_at < moment < resumed_at]
    assert any(moment > resumed_at for moment in sent_at)


async def test_sigterm_stops_cleanly_with_requests_in_flight(
    spawn: Spawn, unused_tcp_port: int
) -> None:
    tester, url = start_tester(
        spawn,
        {
            "CALLBACK_ENDPOINT": f"http://127.0.0.1:{unused_tcp_port}",
            "TESTER_INTERVAL": "1h",
            "TESTER_HANG_RATE": "0.5",
            "TESTER_DELAY_MIN": "10s",
            "TESTER_DELAY_MAX": "10s",
        },
    )
    async with httpx.AsyncClient(timeout=30) as client:
        pending = [asyncio.create_task(client.get(f"{url}/objects/{n}")) for n in range(20)]

        async def all_in_flight() -> bool:
            return bool((await get_json(url + "/stats"))["objects"]["in_flight"] == 20)

        await eventually(all_in_flight, timeout=10)
        started = time.monotonic()
        tester.signal(signal.SIGTERM)
        assert await asyncio.to_thread(tester.wait, 10) == 0
        assert time.monotonic() - started < 5
        await asyncio.gather(*pending, return_exceptions=True)
    assert "Traceback" not in tester.output()
    assert log_events(tester, "service_exited")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"TESTER_DELAY_MIN": "abc"}, "TESTER_DELAY_MIN"),
        ({"TESTER_ERROR_RATE": "2"}, "TESTER_ERROR_RATE"),
        ({"TESTER_DELAY_MIN": "2s", "TESTER_DELAY_MAX": "1s"}, "TESTER_DELAY_MAX"),
        ({"TESTER_HANG_RATE": "0.6", "TESTER_GARBAGE_RATE": "0.6"}, "TESTER_GARBAGE_RATE"),
        ({"CALLBACK_ENDPOINT": None}, "CALLBACK_ENDPOINT is required"),
    ],
)
def test_bad_configuration_exits_2_with_one_line_naming_the_variable(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str | None],
    named: str,
) -> None:
    monkeypatch.delenv("CALLBACK_ENDPOINT", raising=False)
    given = {"CALLBACK_ENDPOINT": "http://127.0.0.1:9", **env}
    result = run_module(
        "tester", {k: v for k, v in given.items() if v is not None}, tmp_path, timeout=30
    )
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tester: configuration error:")
    assert named in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_a_port_in_use_exits_1_with_one_error_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_module(
            "tester",
            {
                "CALLBACK_ENDPOINT": "http://127.0.0.1:9",
                "TESTER_HOST": "127.0.0.1",
                "TESTER_PORT": str(port),
            },
            tmp_path,
        )
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    errors = [json.loads(line) for line in result.stdout.splitlines() if '"error"' in line]
    assert [entry["event"] for entry in errors] == ["cannot_listen"]
