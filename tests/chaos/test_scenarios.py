"""One fault per scenario, injected into the running suite while the tester keeps sending.

Each scenario asserts, over its whole window: every callback answered 2xx within the tester's
1 s timeout (except those sent while no producer process existed at all), no online id lost, no
offline id stored; and it measures the seconds from the end of the fault until the backlog is
stored. The figures go to var/chaos-results.json.
"""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from tests.support.rabbit_node import PrivateRabbitNode
from tests.support.waiting import eventually

from .conftest import BOTH_BROKERS, BOTH_STORES, EVERY_SUITE, HANG_S, OUTAGE_S
from .harness import ChaosSuite, Scenario, ScenarioResult, now

pytestmark = pytest.mark.chaos

KILL_PAUSE_S = 1.0  # "restarted after a moment"
FAULTY_STATUS_S = 10.0


def consumers(chaos: ChaosSuite) -> list[str]:
    """The Procfile's consumer processes, whatever they are called."""
    return [name for name, entry in chaos.suite.entries.items() if entry.module == "consumer"]


def passed(result: ScenarioResult) -> None:
    assert result.passed, result.describe()


async def restart(chaos: ChaosSuite, *names: str) -> None:
    """Start the stopped ``names`` together, then wait until each is ready."""
    for name in names:
        assert not chaos.suite.processes[name].running(), name
        chaos.suite.start(name)
    for name in names:
        await asyncio.to_thread(chaos.suite.wait_ready, name)


async def kill_and_restart(chaos: ChaosSuite, scenario: Scenario, *names: str) -> None:
    down_from = now()
    scenario.fault_begins()
    for name in names:
        chaos.suite.kill(name)
    await asyncio.sleep(KILL_PAUSE_S)  # the outage's length, not a wait for work
    await restart(chaos, *names)
    if "producer" in names:
        scenario.producer_was_down(down_from, now())
    scenario.fault_ends()


async def spool_used_during(chaos: ChaosSuite, seconds: float) -> int:
    """Sample the producer's spool depth for ``seconds`` (the fault's length); the largest seen."""
    deepest = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready = await asyncio.to_thread(chaos.producer_ready)
        deepest = max(deepest, int(ready["spool_depth"]))
        await asyncio.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
    return deepest


async def test_kill_9_producer(chaos: ChaosSuite) -> None:
    scenario = await chaos.begin("kill -9 producer", "SIGKILL, restart after 1 s")
    await kill_and_restart(chaos, scenario, "producer")
    passed(await scenario.settle())


@EVERY_SUITE
async def test_kill_9_every_consumer(chaos: ChaosSuite) -> None:
    scenario = await chaos.begin("kill -9 every consumer", "SIGKILL of both, restart after 1 s")
    await kill_and_restart(chaos, scenario, *consumers(chaos))
    passed(await scenario.settle())


async def test_kill_9_routine(chaos: ChaosSuite) -> None:
    scenario = await chaos.begin("kill -9 routine", "SIGKILL, restart after 1 s")
    await kill_and_restart(chaos, scenario, "routine")
    routine = chaos.suite.processes["routine"]
    await asyncio.to_thread(routine.wait_for_log, '"expiry_tick"', timeout=10)
    passed(await scenario.settle())


@BOTH_BROKERS
async def test_broker_connection_cut(chaos: ChaosSuite) -> None:
    scenario = await chaos.begin(
        "broker connection cut", f"TCP proxy resets and refuses for {OUTAGE_S:.0f} s"
    )
    scenario.fault_begins()
    chaos.broker_proxy.cut()
    deepest = await spool_used_during(chaos, OUTAGE_S)
    chaos.broker_proxy.restore()
    scenario.fault_ends()
    assert deepest > 0, "the producer never spooled: the cut did not reach it"
    passed(await scenario.settle(notes=f"spool peaked at {deepest} messages"))


async def test_broker_restart(chaos: ChaosSuite) -> None:
    if chaos.node is None:
        pytest.skip(f"needs a private RabbitMQ node: {PrivateRabbitNode.available()}")
    node = chaos.node
    scenario = await chaos.begin(
        "broker restart", "rabbitmqctl stop, then start of the suite's own node"
    )
    scenario.fault_begins()
    await asyncio.to_thread(node.restart)
    scenario.fault_ends()
    spooled = scenario.new_output("producer").count('"callback_spooled"')
    assert spooled > 0, "the producer never spooled: the restart did not reach it"
    passed(await scenario.settle(notes=f"{spooled} callbacks spooled"))


@BOTH_STORES
async def test_database_connection_cut(chaos: ChaosSuite) -> None:
    scenario = await chaos.begin(
        f"{chaos.store_noun} connection cut", f"TCP proxy resets and refuses for {OUTAGE_S:.0f} s"
    )
    scenario.fault_begins()
    chaos.db_proxy.cut()
    await store_away_for(chaos, OUTAGE_S)
    chaos.db_proxy.restore()
    scenario.fault_ends()
    assert "intake_paused" in scenario.new_output("consumer"), "the cut did not reach consumers"
    passed(await scenario.settle(notes=await ready_again(chaos)))


async def store_away_for(chaos: ChaosSuite, seconds: float) -> None:
    """The fault's length; meanwhile every consumer must come to answer ``/ready`` 503."""
    until = time.monotonic() + seconds

    async def none_ready() -> bool:
        return set(await asyncio.to_thread(chaos.consumers_ready)) == {503}

    # The consumers' store probe runs every second and gives up on a ping after 2 s.
    await eventually(none_ready, timeout=max(seconds, 10), interval=0.2, what="not ready")
    await asyncio.sleep(max(0.0, until - time.monotonic()))  # the rest of the outage


async def ready_again(chaos: ChaosSuite) -> str:
    """Wait for every consumer to answer ``/ready`` 200 again; the seconds it took, as a note."""
    began = time.monotonic()

    async def all_ready() -> bool:
        return set(await asyncio.to_thread(chaos.consumers_ready)) == {200}

    await eventually(all_ready, timeout=30, interval=0.1, what="consumers ready again")
    return (
        f"consumers /ready 503 during the fault, 200 again {time.monotonic() - began:.1f} s after"
    )


async def test_database_sessions_terminated(chaos: ChaosSuite) -> None:
    scenario = await chaos.begin(
        "pg_terminate_backend", "every session of the suite's database, 3 times 1 s apart"
    )
    scenario.fault_begins()
    terminated = 0
    for round_ in range(3):
        if round_:
            await asyncio.sleep(1.0)  # spacing between the blows, not a wait for work
        terminated += await chaos.terminate_sessions()
    scenario.fault_ends()
    assert terminated > 0
    passed(await scenario.settle(notes=f"{terminated} sessions terminated"))


@BOTH_BROKERS
async def test_broker_path_hangs(chaos: ChaosSuite) -> None:
    scenario = await chaos.begin(
        "broker path hangs",
        f"TCP proxy forwards nothing, resets nothing, for {chaos.hang_s:.0f} s",
    )
    scenario.fault_begins()
    chaos.broker_proxy.blackhole()
    deepest = await spool_used_during(chaos, chaos.hang_s)
    chaos.broker_proxy.restore()
    scenario.fault_ends()
    assert deepest > 0, "the producer never spooled: the hang did not reach it"
    passed(await scenario.settle(notes=f"spool peaked at {deepest} messages"))


@BOTH_STORES
async def test_database_path_hangs(chaos: ChaosSuite) -> None:
    scenario = await chaos.begin(
        f"{chaos.store_noun} path hangs",
        f"TCP proxy forwards nothing, resets nothing, for {HANG_S:.0f} s",
    )
    scenario.fault_begins()
    chaos.db_proxy.blackhole()
    await store_away_for(chaos, HANG_S)
    chaos.db_proxy.restore()
    scenario.fault_ends()
    passed(await scenario.settle(notes=await ready_again(chaos)))


@pytest.mark.parametrize("chaos_suite", ["rabbitmq-redis"], indirect=True)
async def test_redis_kill_9_and_aof_restart(chaos: ChaosSuite) -> None:
    server = chaos.redis
    assert server is not None
    scenario = await chaos.begin(
        "Redis kill -9", "SIGKILL of redis-server (AOF, appendfsync everysec), restart after 1 s"
    )
    scenario.fault_begins()
    server.kill()
    await store_away_for(chaos, KILL_PAUSE_S)
    await asyncio.to_thread(server.start)
    scenario.fault_ends()
    passed(await scenario.settle(notes=await ready_again(chaos)))


async def test_status_api_faults(chaos: ChaosSuite) -> None:
    tester = chaos.suite.tester
    scenario = await chaos.begin(
        "status API faults",
        f"20 % 500s, 5 % hangs, 5 % garbage bodies for {FAULTY_STATUS_S:.0f} s",
    )
    tester("POST", "/stats/reset")
    scenario.fault_begins()
    tester("POST", "/control", json={"error_rate": 0.2, "hang_rate": 0.05, "garbage_rate": 0.05})
    await asyncio.sleep(FAULTY_STATUS_S)  # the faulty stretch's length
    tester("POST", "/control", json={"error_rate": 0, "hang_rate": 0, "garbage_rate": 0})
    scenario.fault_ends()
    answered = tester("GET", "/stats")["objects"]
    assert answered["answered"]["error"] > 0 and answered["answered"]["garbage"] > 0
    result = await scenario.settle()
    # Hung requests are cut by the consumer's STATUS_TIMEOUT; they show as "gave_up".
    assert tester("GET", "/stats")["objects"]["gave_up"] > 0
    passed(result)


@BOTH_BROKERS
async def test_sigterm_every_service(chaos: ChaosSuite) -> None:
    suite = chaos.suite
    services = [name for name in suite.processes if name != "tester"]
    scenario = await chaos.begin(
        "SIGTERM every service", "SIGTERM of producer, consumers and routine, then restart"
    )
    down_from = now()
    scenario.fault_begins()
    began = time.monotonic()
    for name in services:
        suite.processes[name].signal(signal.SIGTERM)
    codes = {name: await asyncio.to_thread(suite.processes[name].wait, 15) for name in services}
    stopped_in = time.monotonic() - began
    await restart(chaos, *services)
    scenario.producer_was_down(down_from, now())
    scenario.fault_ends()
    assert codes == dict.fromkeys(services, 0), codes
    result = await scenario.settle(notes=f"all exited 0 within {stopped_in:.1f} s")
    passed(result)
