"""The tester's HTTP endpoints, served in-process on a real socket: /objects with its delays and
faults, /stats, /control, /ledger, /health."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from random import Random
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tester import settings as tester_settings
from tester import state as tester_state
from tester.app import make_app, make_runner
from tester.choices import choose_delay, choose_fault
from tests.support.tester import is_valid_answer
from tests.support.waiting import eventually

pytestmark = pytest.mark.unit


@dataclass
class Running:
    url: str
    state: tester_state.TesterState
    http: aiohttp.ClientSession

    async def get(self, path: str, **kwargs: Any) -> tuple[int, bytes, float]:
        started = time.perf_counter()
        async with self.http.get(self.url + path, **kwargs) as response:
            body = await response.read()
        return response.status, body, time.perf_counter() - started

    async def json(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        async with self.http.request(method, self.url + path, data=data) as response:
            return response.status, await response.json()


StartTester = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start_tester() -> AsyncIterator[StartTester]:
    """Serve the tester's app (no callback loop) with the given settings on 127.0.0.1:<free>."""
    runners: list[web.AppRunner] = []
    async with aiohttp.ClientSession() as http:

        async def start(**values: Any) -> Running:
            values.setdefault("callback_endpoint", "http://127.0.0.1:9")
            values.setdefault("tester_seed", 1)
            settings = tester_settings.TesterSettings(_env_file=None, **values)
            state = tester_state.TesterState.from_settings(settings)
            runner = make_runner(make_app(state))
            await runner.setup()
            runners.append(runner)
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            return Running(f"http://127.0.0.1:{port}", state, http)

        yield start
    for runner in runners:
        await runner.cleanup()


FAST = {"tester_delay_min": "0s", "tester_delay_max": "0s"}


async def test_objects_answer_online_for_even_ids_as_go_would(start_tester: StartTester) -> None:
    tester = await start_tester(**FAST)
    for path, expected_id in [("0", 0), ("1", 1), ("42", 42), ("-3", -3), ("+6", 6), ("007", 7)]:
        async with tester.http.get(f"{tester.url}/objects/{path}") as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
            body = await response.read()
        assert json.loads(body) == {"id": expected_id, "online": expected_id % 2 == 0}, path


@pytest.mark.parametrize(
    "path",
    [
        "/objects/abc",
        "/objects/1.5",
        "/objects/",
        "/objects/1e3",
        "/objects/%201",
        "/objects/1_000",
        "/objects/1/2",
        "/objects/%D9%A3",
        "/objects/9223372036854775808",
        "/objects/" + "9" * 5000,
    ],
)
async def test_a_non_integer_id_gets_400_invalid_id(start_tester: StartTester, path: str) -> None:
    tester = await start_tester(**FAST)
    status, body, _ = await tester.get(path)
    assert (status, body) == (400, b"invalid id\n")
    assert tester.state.objects.invalid == 1


async def test_int64_bounds_are_valid_ids(start_tester: StartTester) -> None:
    tester = await start_tester(**FAST)
    for object_id in (2**63 - 1, -(2**63)):
        status, body, _ = await tester.get(f"/objects/{object_id}")
        assert status == 200
        assert json.loads(body) == {"id": object_id, "online": object_id % 2 == 0}


async def test_each_answer_comes_after_a_delay_within_the_bounds(start_tester: StartTester) -> None:
    tester = await start_tester(tester_delay_min="50ms", tester_delay_max="150ms")
    # Each request draws its fault and then its delay with no await in between, so the delays the
    # tester will draw are the next 60 pairs of a copy of its generator: known without timing.
    replay = Random()
    replay.setstate(tester.state.object_rng.getstate())
    knobs = tester.state.knobs
    drawn = []
    for _ in range(60):
        choose_fault(replay, knobs.rates)
        drawn.append(choose_delay(replay, knobs.delay_min, knobs.delay_max))
    answers = await asyncio.gather(*(tester.get(f"/objects/{n}") for n in range(60)))
    assert {status for status, _, _ in answers} == {200}
    assert all(0.05 <= delay <= 0.15 for delay in drawn)
    assert max(drawn) - min(drawn) > 0.05, "delays are drawn, not fixed"
    # Every answer waits at least its own drawn delay, so the k-th fastest answer cannot beat the
    # k-th shortest delay. The upper side is a wall-clock figure on a shared machine (a CI run saw
    # 0.41 s for a 0.15 s delay): bounded only loosely, to catch a unit mistake, not jitter.
    latencies = sorted(latency for _, _, latency in answers)
    assert all(latency >= delay for latency, delay in zip(latencies, sorted(drawn), strict=True))
    assert latencies[-1] < 0.15 + 5.0


async def test_error_knob_answers_500(start_tester: StartTester) -> None:
    tester = await start_tester(tester_error_rate=1, **FAST)
    answers = await asyncio.gather(*(tester.get(f"/objects/{n}") for n in range(20)))
    assert {status for status, _, _ in answers} == {500}
    assert tester.state.objects.as_json()["answered"]["error"] == 20


async def test_garbage_knob_answers_200_with_bodies_a_strict_client_refuses(
    start_tester: StartTester,
) -> None:
    tester = await start_tester(tester_garbage_rate=1, **FAST)
    answers = await asyncio.gather(*(tester.get(f"/objects/{n}") for n in range(60)))
    assert {status for status, _, _ in answers} == {200}
    assert not [n for n, (_, body, _) in enumerate(answers) if is_valid_answer(body, n)]
    assert len({body for _, body, _ in answers}) > 5, "several kinds of garbage"


async def test_hang_knob_holds_the_request_until_the_client_gives_up(
    start_tester: StartTester,
) -> None:
    tester = await start_tester(tester_hang_rate=1, **FAST)
    started = time.perf_counter()
    with pytest.raises(TimeoutError):
        await tester.get("/objects/1", timeout=aiohttp.ClientTimeout(total=0.5))
    assert time.perf_counter() - started >= 0.5
    objects = tester.state.objects

    async def released() -> bool:
        return objects.in_flight == 0 and objects.outcomes["gave_up"] == 1

    await eventually(released, timeout=5, what="the hung handler is released")


async def test_mixed_knobs_split_the_answers_by_their_rates(start_tester: StartTester) -> None:
    tester = await start_tester(
        tester_error_rate=0.25, tester_garbage_rate=0.25, tester_seed=3, **FAST
    )
    answers = await asyncio.gather(*(tester.get(f"/objects/{n}") for n in range(400)))
    kinds = Counter(
        "error" if status == 500 else "good" if is_valid_answer(body, n) else "garbage"
        for n, (status, body, _) in enumerate(answers)
    )
    assert kinds["error"] == pytest.approx(100, abs=35)
    assert kinds["garbage"] == pytest.approx(100, abs=35)
    assert kinds["good"] == pytest.approx(200, abs=40)


async def test_control_changes_delays_and_faults_at_runtime(start_tester: StartTester) -> None:
    tester = await start_tester(**FAST)
    status, knobs = await tester.json("POST", "/control", {"error_rate": 1})
    assert (status, knobs["error_rate"]) == (200, 1.0)
    assert (await tester.get("/objects/2"))[0] == 500
    await tester.json("POST", "/control", {"error_rate": 0, "delay_min": "200ms", "delay_max": 0.2})
    status, body, latency = await tester.get("/objects/2")
    assert (status, json.loads(body)) == (200, {"id": 2, "online": True})
    assert latency >= 0.2
    status, shown = await tester.json("GET", "/control")
    assert shown == {
        "delay_min": "200ms",
        "delay_max": "200ms",
        "error_rate": 0.0,
        "hang_rate": 0.0,
        "garbage_rate": 0.0,
        "paused": False,
    }


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1]", b"", b'{"error_rate": 2}', b'{"paused": "yes"}', b'{"delay_min": "9s"}'],
)
async def test_control_refuses_garbage_and_changes_nothing(
    start_tester: StartTester, body: bytes
) -> None:
    tester = await start_tester(**FAST)
    before = tester.state.knobs
    status, answer = await tester.json("POST", "/control", body)
    assert status == 400
    assert answer["error"]
    assert tester.state.knobs == before


async def test_control_refuses_an_oversized_body(start_tester: StartTester) -> None:
    tester = await start_tester(**FAST)
    async with tester.http.post(tester.url + "/control", data=b" " * 100_000) as response:
        assert response.status == 413


async def test_stats_count_requests_peaks_and_per_id_concurrency(start_tester: StartTester) -> None:
    tester = await start_tester(tester_delay_min="100ms", tester_delay_max="100ms")
    await asyncio.gather(
        *(tester.get(f"/objects/{n}") for n in (7, 7, 7, 8)), tester.get("/objects/x")
    )
    _, stats = await tester.json("GET", "/stats")
    objects = stats["objects"]
    assert (objects["requests"], objects["invalid"], objects["in_flight"]) == (5, 1, 0)
    assert objects["peak_in_flight"] == 4
    assert objects["per_id"] == {"7": 3, "8": 1}
    assert objects["per_id_peak_in_flight"] == {"7": 3, "8": 1}
    assert objects["answered"] == {"none": 4, "error": 0, "garbage": 0}
    assert stats["callbacks"] == {"sent": 0, "ok": 0, "failed": 0}

    status, after_reset = await tester.json("POST", "/stats/reset")
    assert status == 200
    assert after_reset["objects"]["requests"] == 0
    assert after_reset["objects"]["peak_in_flight"] == 0
    assert after_reset["objects"]["per_id"] == {}


async def test_health_and_empty_ledger(start_tester: StartTester) -> None:
    tester = await start_tester(**FAST)
    assert await tester.json("GET", "/health") == (200, {"status": "ok"})
    assert await tester.json("GET", "/ledger") == (
        200,
        {"total": 0, "dropped": 0, "records": []},
    )
    status, error = await tester.json("GET", "/ledger?after=abc")
    assert status == 400
    assert "after" in error["error"]


async def test_objects_answer_get_and_head_only(start_tester: StartTester) -> None:
    tester = await start_tester(**FAST)
    async with tester.http.head(tester.url + "/objects/4") as response:
        assert response.status == 200
    async with tester.http.post(tester.url + "/objects/4") as response:
        assert response.status == 405
